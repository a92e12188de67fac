//! The services: the chat endpoint's behaviour in each execution mode ([`chat`]) and the queue
//! workers, the agent runner and the response handler ([`worker`]).
//!
//! Layer: services. Uses the execution core ([`crate::exec`]), the ports and adapters; knows no
//! HTTP (the edge, `ak-http`, maps what they answer onto its protocols).

pub mod chat;
pub mod worker;
