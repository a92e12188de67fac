//! Tools an agent can call: async Rust functions with a JSON schema for their arguments.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// What a tool knows about the request it serves.
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// The request being answered.
    pub request_id: String,
    /// Its session.
    pub session_id: String,
    /// Who asked, when known.
    pub user_id: Option<String>,
    /// The extra fields of the request body.
    pub context: Map<String, Value>,
    /// The id of this call, as the model gave it (unique within the run): with `request_id`,
    /// an idempotency key for a tool with consequences.
    pub call_id: String,
}

/// A tool failed; the message goes back to the model as the tool's result.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// A function the model may call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Function name the model uses (letters, digits, `_`, `-`).
    fn name(&self) -> &str;
    /// What the tool does, for the model.
    fn description(&self) -> &str;
    /// JSON schema of the arguments object.
    fn parameters(&self) -> Value;
    /// Runs the tool; the result is sent back to the model as JSON text.
    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value, ToolError>;

    /// Whether this call must wait for a person's approval before it runs (the run pauses;
    /// see `docs/approvals.md`). Never, unless the tool says so.
    fn needs_approval(&self, _arguments: &Value, _context: &ToolContext) -> bool {
        false
    }
}

type ApprovalFn = dyn Fn(&Value, &ToolContext) -> bool + Send + Sync;

type ToolFn = dyn Fn(
        Value,
        ToolContext,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send>>
    + Send
    + Sync;

/// A tool made from an async closure.
pub struct FnTool {
    name: String,
    description: String,
    parameters: Value,
    run: Box<ToolFn>,
    approval: Option<Box<ApprovalFn>>,
}

impl FnTool {
    /// A tool named `name` running `run(arguments, context)`.
    pub fn new<F, Fut>(name: &str, description: &str, parameters: Value, run: F) -> Self
    where
        F: Fn(Value, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            parameters,
            run: Box::new(move |args, ctx| Box::pin(run(args, ctx))),
            approval: None,
        }
    }

    /// Calls for which `decide(arguments, context)` is true wait for a person's approval
    /// before they run: `FnTool::new(...).needs_approval(|args, _| args["amount"].as_f64() >
    /// Some(100.0))`.
    pub fn needs_approval(
        mut self,
        decide: impl Fn(&Value, &ToolContext) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.approval = Some(Box::new(decide));
        self
    }

    /// Every call waits for a person's approval before it runs.
    pub fn always_needs_approval(self) -> Self {
        self.needs_approval(|_, _| true)
    }
}

#[async_trait]
impl Tool for FnTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value, ToolError> {
        (self.run)(arguments, context.clone()).await
    }

    fn needs_approval(&self, arguments: &Value, context: &ToolContext) -> bool {
        self.approval
            .as_ref()
            .is_some_and(|decide| decide(arguments, context))
    }
}

/// Tools registered in Rust, found by the names `config.yaml` lists under an agent's `tools`.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool (replacing one of the same name).
    pub fn with(mut self, tool: impl Tool + 'static) -> Self {
        self.tools.insert(tool.name().to_owned(), Arc::new(tool));
        self
    }

    /// The tool of this name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }

    /// Registered names.
    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }
}
