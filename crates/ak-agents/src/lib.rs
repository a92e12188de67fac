//! Agents, handoffs, tools, conversation sessions and model providers.
//!
//! Empty for now: the agent runtime (run loop, OpenAI-compatible provider, offline model) is
//! built on top of `ak-core`'s configuration and ports.
