//! The execution core and the services of the agent runtime.
//!
//! - [`exec`], the execution core: running an agent for one request under its deadline and
//!   claim, panics contained; its stored answer and final event; the run's event log.
//! - [`service`], the services built on it: chat in each execution mode
//!   ([`ChatService`]), the agent runner and the response handler.
//!
//! Architecture invariant: arrows point down only (`service` → `exec` → `ak-core`); nothing
//! here knows HTTP or Lambda events. Every protocol surface at the edge drives the same
//! [`ChatService`] and translates the same run events.

pub mod exec;
pub mod service;

pub use service::chat::{CANCELED, ChatService, Execution, Progress, StreamOptions};
pub use service::worker::{AgentRunnerHandler, ResponseHandler, pump};
