//! Foundations and ports of the agent runtime: what every other crate builds on.
//!
//! Layer 1, foundations (use nothing above them):
//! - [`config`]: the typed [`Settings`], loaded from defaults, `config.yaml`
//!   and `AK_` environment variables, validated at cold start ([`lenient`] reads values however
//!   they arrived; [`secret`] keeps values out of logs).
//! - [`request`]: chat requests in both payload shapes, their validation and ids.
//! - [`error`]: [`ApiError`], every failure a client can see, with its status code and body.
//! - [`events`]: a run's events ([`RunEvent`](events::RunEvent)), the channel a run reports
//!   to, and [`RunStream`](events::RunStream), the numbered events of one run.
//! - [`answer`]: what a request is answered with ([`Answer`]: status and
//!   body), the body of a finished run, and what an agent run produced.
//! - [`https`]: the outbound HTTPS client; [`logging`] and [`metrics`]: JSON logs and
//!   CloudWatch Embedded Metric Format lines.
//!
//! Layer 2, [`ports`]: the queue, response store, session store and agent runner traits, and
//! their in-process adapters ([`ports::memory`]).
//!
//! Architecture invariant: nothing here knows HTTP requests or responses, Lambda events, AWS
//! SDKs or Redis. Adapters live in `ak-adapters`, the execution core and services in
//! `ak-runtime`, the HTTP edge in `ak-http`.

pub mod answer;
pub mod config;
pub mod error;
pub mod events;
pub mod https;
pub mod lenient;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod ports;
pub mod request;
pub mod secret;
pub mod time;

pub use answer::{Answer, ChatAnswer};
pub use config::Settings;
pub use error::ApiError;
pub use request::RunRequest;
