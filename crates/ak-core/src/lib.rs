//! Core of the agent runtime: what every function and the local server share.
//!
//! - [`config`]: the typed [`Settings`](config::Settings), loaded from defaults, `config.yaml`
//!   and `AK_` environment variables, validated at cold start.
//! - [`request`]: chat requests in both payload shapes, their validation and ids.
//! - [`response`] and [`error`]: JSON answers, and the one error type mapped to HTTP statuses.
//! - [`event`]: the Lambda events of every front door (REST and HTTP APIs, function URLs, ALB,
//!   direct invokes) read tolerantly into requests, and answers in each door's format.
//! - [`router`]: the chat endpoint and custom routes on `lambda_http` requests.
//! - [`api`], [`chat`] and [`pipeline`]: the request handler in each execution mode, the agent
//!   runner and the response handler, as the Lambda functions and the local server run them.
//! - [`ports`]: the queue, response store and session store traits; [`adapters`]: SQS, Redis,
//!   DynamoDB and in-memory implementations, picked from the configuration.
//! - [`auth`]: the authorizer: the `AuthValidator` trait, the built-in JWT validator, and
//!   REQUEST/TOKEN events turned into IAM policies.
//! - [`secret`]: values that never reach logs.
//! - [`stream`]: a run's events as server-sent events, with heartbeats; [`eventlog`]: the
//!   runs' event logs in the response store, written by the agent runner and followed by any
//!   request handler (`GET .../stream`).
//! - [`aws`], [`https`], [`logging`] and [`metrics`]: the shared AWS SDK configuration and HTTPS
//!   client, JSON logs, and CloudWatch Embedded Metric Format lines.

pub mod adapters;
pub mod api;
pub mod auth;
pub mod aws;
pub mod chat;
pub mod config;
pub mod error;
pub mod event;
pub mod eventlog;
pub mod https;
pub mod lambda;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod ports;
pub mod request;
pub mod response;
pub mod router;
pub mod secret;
pub mod stream;

pub use config::Settings;
pub use error::ApiError;
pub use request::RunRequest;
pub use response::{ApiResponse, ChatAnswer};
pub use router::{Route, RoutePaths, Router};
