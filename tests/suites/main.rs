//! Integration tests against the real local services started by `scripts/test.sh`.
//! One binary, one module per area, so the suite links once.

mod agents;
mod backend_faults;
mod harness;
mod queues;
mod response_store;
mod session_store;
