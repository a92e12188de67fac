//! Amazon Bedrock through the Converse API (`Converse`, and `ConverseStream` when the answer is
//! streamed), with the AWS SDK for Rust: the function's IAM role authorises the call, so there
//! is no key to keep. The client shares the HTTP client and credential chain of the SQS and
//! DynamoDB clients ([`AwsConfig`]) and is built on the first call, not at cold start.
//!
//! The conversation arrives in the Chat Completions format the runtime and the session stores
//! use (see [`ModelRequest::messages`]), so a session can move between providers; it is mapped
//! to Converse here: `system` messages to `system` blocks; user text to user `text` blocks;
//! assistant text and `tool_calls` to `text` and `toolUse` blocks; `tool` messages to
//! `toolResult` blocks in a user message (JSON results as `json`, others as `text`, results
//! with an `error` field marked `status: error`); consecutive messages of one role merged, as
//! Converse takes only alternating roles. Tools and handoffs become `toolConfig.tools[].toolSpec`.
//! The answer maps back: `text` blocks to the content, `toolUse` blocks to tool calls, usage
//! summed by the caller, and `stopReason`: `end_turn`/`stop_sequence` stop, `tool_use` tool
//! calls, `max_tokens` and `model_context_window_exceeded` a cut-off answer,
//! `guardrail_intervened`/`content_filtered` the content filter.
//!
//! Failures: throttling, 5xx, model-not-ready and model timeouts are retried with the same
//! backoff and deadline rules as the OpenAI-compatible provider (the SDK's own retries are off,
//! so one policy decides); access and validation errors are not, and say what to fix — never
//! with the request.

use crate::model::{
    FinishReason, ModelError, ModelProvider, ModelReply, ModelRequest, ToolCall, Usage,
};
use ak_adapters::AwsConfig;
use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseOutput,
    ConverseStreamOutput, ImageBlock, ImageFormat, ImageSource, Message, StopReason,
    SystemContentBlock, Tool, ToolConfiguration, ToolInputSchema, ToolResultBlock,
    ToolResultContentBlock, ToolResultStatus, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How the Bedrock provider calls.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// Longest wait for an answer, or (streaming) for each piece of it.
    pub timeout: Duration,
    /// Retries after throttling, 5xx and timeouts.
    pub max_retries: u32,
    /// Another Bedrock Runtime endpoint (a VPC endpoint's URL, a test server); `None`: the
    /// SDK's (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` and `AWS_ENDPOINT_URL` apply).
    pub endpoint: Option<String>,
}

/// Bedrock models through the Converse API.
pub struct BedrockProvider {
    aws: AwsConfig,
    config: BedrockConfig,
    client: OnceCell<Client>,
}

impl BedrockProvider {
    /// A provider using the shared AWS configuration; no network until the first call.
    pub fn new(aws: AwsConfig, config: BedrockConfig) -> Self {
        Self {
            aws,
            config,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let shared = self.aws.get().await;
                // A model answers in seconds, not the stores' milliseconds: no attempt timeout
                // of the shared configuration; the provider's own timeouts bound each call.
                let timeouts = aws_sdk_bedrockruntime::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(ak_adapters::aws::CONNECT_TIMEOUT)
                    .build();
                let mut config = aws_sdk_bedrockruntime::config::Builder::from(shared)
                    .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
                    .timeout_config(timeouts);
                if let Some(url) = &self.config.endpoint {
                    config = config.endpoint_url(url);
                }
                Client::from_conf(config.build())
            })
            .await
    }

    async fn attempt(
        &self,
        request: &ModelRequest,
        converse: &Converse,
        timeout: Duration,
        emitted: &mut bool,
    ) -> Result<ModelReply, Failure> {
        let client = self.client().await;
        if let Some(sink) = &request.on_text {
            let call = client
                .converse_stream()
                .model_id(&request.model)
                .set_system((!converse.system.is_empty()).then(|| converse.system.clone()))
                .set_messages(Some(converse.messages.clone()))
                .set_tool_config(converse.tools.clone());
            let mut output = match tokio::time::timeout(timeout, call.send()).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(failure(&e, &request.model)),
                Ok(Ok(output)) => output,
            };
            let mut reply = StreamedReply::default();
            loop {
                let silence_ends = tokio::time::Instant::now() + timeout;
                let until = request
                    .deadline
                    .map_or(silence_ends, |d| d.min(silence_ends));
                let event = match tokio::time::timeout_at(until, output.stream.recv()).await {
                    Err(_) if request.deadline.is_some_and(|d| d <= silence_ends) => {
                        return Err(Failure::Deadline);
                    }
                    Err(_) => return Err(Failure::Timeout),
                    Ok(Err(e)) => return Err(failure(&e, &request.model)),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(event))) => event,
                };
                if let Some(text) = reply.event(event) {
                    sink.send(&text);
                    *emitted = true;
                }
            }
            return reply.finish();
        }
        let call = client
            .converse()
            .model_id(&request.model)
            .set_system((!converse.system.is_empty()).then(|| converse.system.clone()))
            .set_messages(Some(converse.messages.clone()))
            .set_tool_config(converse.tools.clone());
        let output = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(failure(&e, &request.model)),
            Ok(Ok(output)) => output,
        };
        let usage = output.usage().map(|u| Usage {
            prompt_tokens: tokens(u.input_tokens()),
            completion_tokens: tokens(u.output_tokens()),
            total_tokens: tokens(u.total_tokens()),
        });
        let finish = finish_reason(output.stop_reason());
        let Some(ConverseOutput::Message(message)) = output.output else {
            return Err(Failure::Invalid(ModelError::InvalidResponse(
                "the Converse answer holds no message".to_owned(),
            )));
        };
        let mut reply = ModelReply {
            finish,
            usage: usage.unwrap_or_default(),
            ..ModelReply::default()
        };
        let mut text = String::new();
        for block in message.content {
            match block {
                ContentBlock::Text(piece) => text.push_str(&piece),
                ContentBlock::ToolUse(call) => reply.tool_calls.push(ToolCall {
                    id: call.tool_use_id,
                    name: call.name,
                    arguments: json_of(&call.input).to_string(),
                    extra: None,
                }),
                // Reasoning, citations and the like are not part of the answer.
                _ => {}
            }
        }
        reply.content = (!text.trim().is_empty()).then_some(text);
        Ok(reply)
    }
}

fn tokens(n: i32) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn finish_reason(reason: &StopReason) -> FinishReason {
    match reason {
        StopReason::ToolUse => FinishReason::ToolCalls,
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => FinishReason::Length,
        StopReason::GuardrailIntervened | StopReason::ContentFiltered => {
            FinishReason::ContentFilter
        }
        StopReason::MalformedModelOutput | StopReason::MalformedToolUse => FinishReason::Error,
        _ => FinishReason::Stop,
    }
}

/// How an attempt failed.
enum Failure {
    /// No answer (or, streaming, a silence) within the timeout.
    Timeout,
    /// The deadline came while the answer was still streaming.
    Deadline,
    /// Throttled, 5xx, not ready: worth another attempt.
    Retryable { status: u16, code: String },
    /// The connection failed.
    Connection(String),
    /// Refused, or unreadable: not retried.
    Invalid(ModelError),
}

/// What an SDK error means for the next attempt. Service errors are told apart by their code
/// (the exception's name); their messages are not passed on.
fn failure<E, R>(e: &SdkError<E, R>, model: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    // No credentials, no region or an invalid one: no retry can help.
    if let Some(problem) =
        ak_adapters::aws::configuration_problem(e as &(dyn std::error::Error + 'static))
    {
        return Failure::Invalid(ModelError::Refused {
            reason: format!("the function cannot call Bedrock as configured: {problem}"),
        });
    }
    match e {
        // The request could not even be made (nothing was sent).
        SdkError::ConstructionFailure(_) => Failure::Invalid(ModelError::Refused {
            reason: format!(
                "the Bedrock request could not be made: {}",
                ak_core::https::root_cause(e as &(dyn std::error::Error + 'static))
            ),
        }),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Failure::Connection(
            ak_core::https::root_cause(e as &(dyn std::error::Error + 'static)),
        ),
        SdkError::ResponseError(_) => Failure::Invalid(ModelError::InvalidResponse(
            "Bedrock's answer could not be read".to_owned(),
        )),
        _ => {
            let code = e
                .as_service_error()
                .and_then(ProvideErrorMetadata::code)
                .unwrap_or("")
                .to_owned();
            tracing::warn!(code = %code, model, "Bedrock answered an error");
            // Event-stream exceptions name their type in lower camel case
            // (`throttlingException`): compare without case.
            let retry = |status: u16| Failure::Retryable {
                status,
                code: code.clone(),
            };
            let refused = |reason: String| Failure::Invalid(ModelError::Refused { reason });
            match code.to_ascii_lowercase().as_str() {
                "throttlingexception" => retry(429),
                "modelnotreadyexception" => retry(429),
                "modeltimeoutexception" => retry(408),
                "internalserverexception" => retry(500),
                "serviceunavailableexception" => retry(503),
                "modelstreamerrorexception" => retry(424),
                "accessdeniedexception" => refused(format!(
                    "Bedrock refused access to model {model} (AccessDeniedException): the function's role may not invoke it, or the model is not enabled in this account and region; grant bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream on it (the Terraform module does for model.name) and request model access in the Bedrock console"
                )),
                "unrecognizedclientexception"
                | "expiredtokenexception"
                | "invalidsignatureexception"
                | "incompletesignatureexception" => refused(format!(
                    "Bedrock refused the function's AWS credentials ({code}): check the credentials or role the function runs with, and that they are not expired"
                )),
                "resourcenotfoundexception" => refused(format!(
                    "Bedrock has no model {model} here (ResourceNotFoundException): check model.name, the region, and whether the model needs an inference profile id (e.g. us.{model})"
                )),
                "servicequotaexceededexception" => refused(format!(
                    "Bedrock's quota for model {model} is exceeded (ServiceQuotaExceededException): request a higher quota in the Service Quotas console"
                )),
                "modelerrorexception" => {
                    Failure::Invalid(ModelError::ErrorInReply { code: Some(code) })
                }
                // No error type at all: an answer the SDK could not read.
                "" | "unknownerror" => Failure::Invalid(ModelError::InvalidResponse(
                    "Bedrock's answer could not be read".to_owned(),
                )),
                _ => Failure::Invalid(ModelError::Rejected {
                    status: 400,
                    detail: Some(code),
                }),
            }
        }
    }
}

#[async_trait]
impl ModelProvider for BedrockProvider {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelReply, ModelError> {
        let converse = Converse::of(request)?;
        let attempts = self.config.max_retries + 1;
        let mut last = ModelError::Connection {
            detail: "no attempt made".to_owned(),
            attempts: 0,
        };
        for attempt in 0..attempts {
            let left = request
                .deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            if left.is_some_and(|left| left < crate::openai::MIN_ATTEMPT) {
                return Err(ModelError::Deadline { attempts: attempt });
            }
            let timeout = left.map_or(self.config.timeout, |l| l.min(self.config.timeout));
            let mut emitted = false;
            let failed = match self
                .attempt(request, &converse, timeout, &mut emitted)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(failed) => failed,
            };
            last = match failed {
                Failure::Invalid(e) => return Err(e),
                Failure::Deadline => {
                    return Err(ModelError::Deadline {
                        attempts: attempt + 1,
                    });
                }
                Failure::Timeout if Some(timeout) == left => {
                    return Err(ModelError::Deadline {
                        attempts: attempt + 1,
                    });
                }
                Failure::Timeout => ModelError::Timeout {
                    timeout_secs: self.config.timeout.as_secs_f64(),
                    attempts: attempt + 1,
                },
                Failure::Connection(detail) => ModelError::Connection {
                    detail,
                    attempts: attempt + 1,
                },
                Failure::Retryable { status, code } => ModelError::Unavailable {
                    status,
                    attempts: attempt + 1,
                    detail: Some(code),
                },
            };
            if emitted {
                tracing::warn!(error = %last, "the model call failed after text reached the client");
                return Err(last);
            }
            if attempt + 1 < attempts {
                let mut pause = crate::openai::backoff(attempt, None);
                if let Some(deadline) = request.deadline {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if pause + crate::openai::MIN_ATTEMPT > left {
                        return Err(last);
                    }
                    pause = pause.min(left);
                }
                tracing::warn!(error = %last, retry_in_ms = pause.as_millis() as u64, "Bedrock call failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
        Err(last)
    }
}

/// A request in Converse's terms.
struct Converse {
    system: Vec<SystemContentBlock>,
    messages: Vec<Message>,
    tools: Option<ToolConfiguration>,
}

impl Converse {
    fn of(request: &ModelRequest) -> Result<Self, ModelError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ModelError::InvalidResponse(format!("cannot build the Converse request: {e}"))
        };
        let mut system = Vec::new();
        // (role, blocks) before merging.
        let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
        for message in &request.messages {
            let text = text_of(&message["content"]);
            match message["role"].as_str().unwrap_or_default() {
                "system" | "developer" if !text.trim().is_empty() => {
                    system.push(SystemContentBlock::Text(text));
                }
                "user" => {
                    let mut blocks = Vec::new();
                    if !text.trim().is_empty() {
                        blocks.push(ContentBlock::Text(text));
                    }
                    blocks.extend(images_of(&message["content"]));
                    if !blocks.is_empty() {
                        turns.push((ConversationRole::User, blocks));
                    }
                }
                "assistant" => {
                    let mut blocks = Vec::new();
                    if !text.trim().is_empty() {
                        blocks.push(ContentBlock::Text(text));
                    }
                    for call in message["tool_calls"].as_array().into_iter().flatten() {
                        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                        let input = serde_json::from_str::<Value>(arguments)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| Value::Object(Map::new()));
                        let block = ToolUseBlock::builder()
                            .tool_use_id(call["id"].as_str().unwrap_or_default())
                            .name(call["function"]["name"].as_str().unwrap_or_default())
                            .input(document_of(&input))
                            .build()
                            .map_err(|e| invalid(&e))?;
                        blocks.push(ContentBlock::ToolUse(block));
                    }
                    if !blocks.is_empty() {
                        turns.push((ConversationRole::Assistant, blocks));
                    }
                }
                "tool" => {
                    let raw = message["content"]
                        .as_str()
                        .map_or_else(|| message["content"].to_string(), str::to_owned);
                    let parsed = serde_json::from_str::<Value>(&raw).ok();
                    let failed = parsed.as_ref().is_some_and(|v| v.get("error").is_some());
                    let content = match parsed {
                        Some(value @ Value::Object(_)) => {
                            ToolResultContentBlock::Json(document_of(&value))
                        }
                        _ => ToolResultContentBlock::Text(if raw.is_empty() {
                            "(empty)".to_owned()
                        } else {
                            raw
                        }),
                    };
                    let block = ToolResultBlock::builder()
                        .tool_use_id(message["tool_call_id"].as_str().unwrap_or_default())
                        .content(content)
                        .status(if failed {
                            ToolResultStatus::Error
                        } else {
                            ToolResultStatus::Success
                        })
                        .build()
                        .map_err(|e| invalid(&e))?;
                    turns.push((
                        ConversationRole::User,
                        vec![ContentBlock::ToolResult(block)],
                    ));
                }
                _ => {}
            }
        }
        // Converse takes alternating roles, starting with the user.
        let mut merged: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
        for (role, blocks) in turns {
            match merged.last_mut() {
                Some((last, existing)) if *last == role => existing.extend(blocks),
                _ => merged.push((role, blocks)),
            }
        }
        if merged
            .first()
            .is_some_and(|(role, _)| *role != ConversationRole::User)
        {
            merged.insert(
                0,
                (
                    ConversationRole::User,
                    vec![ContentBlock::Text("(conversation continues)".to_owned())],
                ),
            );
        }
        let messages = merged
            .into_iter()
            .map(|(role, content)| {
                Message::builder()
                    .role(role)
                    .set_content(Some(content))
                    .build()
                    .map_err(|e| invalid(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tools = if request.tools.is_empty() {
            None
        } else {
            let specs = request
                .tools
                .iter()
                .map(|tool| {
                    let schema = match &tool.parameters {
                        Value::Object(map) if !map.is_empty() => tool.parameters.clone(),
                        _ => serde_json::json!({"type": "object", "properties": {}}),
                    };
                    ToolSpecification::builder()
                        .name(&tool.name)
                        .description(if tool.description.is_empty() {
                            &tool.name
                        } else {
                            &tool.description
                        })
                        .input_schema(ToolInputSchema::Json(document_of(&schema)))
                        .build()
                        .map(Tool::ToolSpec)
                        .map_err(|e| invalid(&e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(
                ToolConfiguration::builder()
                    .set_tools(Some(specs))
                    .build()
                    .map_err(|e| invalid(&e))?,
            )
        };
        Ok(Self {
            system,
            messages,
            tools,
        })
    }
}

/// The text of a Chat Completions `content`: a string, or the text of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect(),
        _ => String::new(),
    }
}

/// The image parts of a user message's content (Chat Completions `image_url` parts holding
/// base64 data URLs, as tool results' images are sent) as Converse image blocks; other URLs
/// and types Converse does not take are left out.
fn images_of(content: &Value) -> Vec<ContentBlock> {
    use base64::Engine;
    let mut blocks = Vec::new();
    for part in content.as_array().into_iter().flatten() {
        let Some(url) = part["image_url"]["url"].as_str() else {
            continue;
        };
        let Some((mime, data)) = url
            .strip_prefix("data:")
            .and_then(|rest| rest.split_once(";base64,"))
        else {
            continue;
        };
        let format = match mime {
            "image/png" => ImageFormat::Png,
            "image/jpeg" => ImageFormat::Jpeg,
            "image/gif" => ImageFormat::Gif,
            "image/webp" => ImageFormat::Webp,
            _ => continue,
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
            continue;
        };
        if let Ok(image) = ImageBlock::builder()
            .format(format)
            .source(ImageSource::Bytes(bytes.into()))
            .build()
        {
            blocks.push(ContentBlock::Image(image));
        }
    }
    blocks
}

/// JSON as a Smithy document (tool inputs, schemas and results).
fn document_of(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(document_of).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), document_of(v)))
                .collect(),
        ),
    }
}

/// A Smithy document as JSON.
fn json_of(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        Document::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), json_of(v))).collect())
        }
    }
}

/// A `ConverseStream` answer, assembled from its events.
#[derive(Default)]
struct StreamedReply {
    text: String,
    /// Tool calls by content block index: id, name, input JSON text.
    calls: BTreeMap<i32, (String, String, String)>,
    finish: Option<FinishReason>,
    usage: Usage,
    events: usize,
}

impl StreamedReply {
    /// Takes one event; returns answer text to hand on.
    fn event(&mut self, event: ConverseStreamOutput) -> Option<String> {
        self.events += 1;
        match event {
            ConverseStreamOutput::ContentBlockStart(start) => {
                if let Some(ContentBlockStart::ToolUse(call)) = start.start {
                    self.calls.insert(
                        start.content_block_index,
                        (call.tool_use_id, call.name, String::new()),
                    );
                }
                None
            }
            ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                Some(ContentBlockDelta::Text(text)) => {
                    self.text.push_str(&text);
                    Some(text)
                }
                Some(ContentBlockDelta::ToolUse(piece)) => {
                    if let Some(call) = self.calls.get_mut(&delta.content_block_index) {
                        call.2.push_str(&piece.input);
                    }
                    None
                }
                _ => None,
            },
            ConverseStreamOutput::MessageStop(stop) => {
                self.finish = Some(finish_reason(&stop.stop_reason));
                None
            }
            ConverseStreamOutput::Metadata(metadata) => {
                if let Some(u) = metadata.usage {
                    self.usage = Usage {
                        prompt_tokens: tokens(u.input_tokens),
                        completion_tokens: tokens(u.output_tokens),
                        total_tokens: tokens(u.total_tokens),
                    };
                }
                None
            }
            _ => None,
        }
    }

    fn finish(self) -> Result<ModelReply, Failure> {
        if self.events == 0 {
            return Err(Failure::Invalid(ModelError::InvalidResponse(
                "the Converse stream carried no event".to_owned(),
            )));
        }
        let tool_calls = self
            .calls
            .into_values()
            .map(|(id, name, input)| ToolCall {
                id,
                name,
                arguments: if input.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    input
                },
                extra: None,
            })
            .collect();
        Ok(ModelReply {
            content: (!self.text.trim().is_empty()).then_some(self.text),
            tool_calls,
            finish: self.finish.unwrap_or_default(),
            usage: self.usage,
            ..ModelReply::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(messages: Vec<Value>) -> ModelRequest {
        ModelRequest {
            model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            agent: "math".into(),
            messages,
            tools: vec![crate::model::ToolSpec {
                name: "multiply".into(),
                description: "Multiplies".into(),
                parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            }],
            deadline: None,
            on_text: None,
        }
    }

    /// A function without AWS credentials is told so at once, naming what is missing, instead
    /// of retrying as if Bedrock could not be reached.
    #[tokio::test]
    async fn missing_credentials_are_refused_at_once_naming_them() {
        let provider = BedrockProvider::new(
            AwsConfig::with_credentials(ak_adapters::aws::MissingCredentials),
            BedrockConfig {
                timeout: Duration::from_secs(5),
                max_retries: 3,
                endpoint: Some("http://127.0.0.1:9".into()),
            },
        );
        let failed = provider
            .complete(&request(vec![json!({"role": "user", "content": "hi"})]))
            .await;
        match failed {
            Err(ModelError::Refused { reason }) => {
                assert!(reason.contains("AWS_ACCESS_KEY_ID"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_completions_messages_become_alternating_converse_turns() {
        let converse = Converse::of(&request(vec![
            json!({"role": "system", "content": "You are math."}),
            json!({"role": "user", "content": "what is 12 * 7"}),
            json!({"role": "assistant", "content": "Let me compute.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "multiply", "arguments": "{\"a\":12,\"b\":7}"}},
                {"id": "t2", "type": "function", "function": {"name": "multiply", "arguments": "not json"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "t1", "content": "{\"product\":84}"}),
            json!({"role": "tool", "tool_call_id": "t2", "content": "{\"error\":\"bad\"}"}),
            json!({"role": "user", "content": [{"type": "text", "text": "and 2 * 3?"}]}),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(converse.system.len(), 1);
        let roles: Vec<&ConversationRole> = converse.messages.iter().map(Message::role).collect();
        assert_eq!(
            roles,
            [
                &ConversationRole::User,
                &ConversationRole::Assistant,
                &ConversationRole::User
            ],
            "tool results and the next question share one user turn"
        );
        let results: Vec<&ToolResultBlock> = converse.messages[2]
            .content()
            .iter()
            .filter_map(|b| b.as_tool_result().ok())
            .collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].tool_use_id(), "t1");
        assert_eq!(results[1].status(), Some(&ToolResultStatus::Error));
        let uses: Vec<&ToolUseBlock> = converse.messages[1]
            .content()
            .iter()
            .filter_map(|b| b.as_tool_use().ok())
            .collect();
        assert_eq!(json_of(uses[0].input()), json!({"a": 12, "b": 7}));
        assert_eq!(
            json_of(uses[1].input()),
            json!({}),
            "unreadable arguments become {{}}"
        );
        assert!(converse.tools.is_some());
    }

    #[test]
    fn documents_and_json_round_trip() {
        let value = json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": {}}});
        assert_eq!(json_of(&document_of(&value)), value);
    }
}
