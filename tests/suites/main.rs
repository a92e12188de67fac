//! Integration tests against the real local services started by `scripts/test.sh`.
//! One binary, one module per area, so the suite links once.

mod a2a;
mod agents;
mod agui_ai_sdk;
mod approvals;
mod authorizer;
mod backend_faults;
mod bedrock;
mod deployed;
mod docs;
mod exactly_once;
mod faults;
mod front_doors;
mod functions;
mod harness;
mod layers;
mod lean;
mod local_server;
mod mcp;
mod mcp_world;
mod model_interop;
mod openai;
mod pipeline;
mod playground;
mod queues;
mod redis_on_aws;
mod reliability;
mod response_store;
mod resumable_streams;
mod session_store;
mod streaming;
mod traces;
