//! Chat requests: the two payload shapes the API accepts, their validation, and the ids the
//! runtime assigns.
//!
//! ```text
//! {"prompt": "Hello agent", "agent": "assistant", "session_id": "user-123", ...extras}
//! {"request_id": "req-123", "user_id": "user-123", "body": {"prompt": "...", ...}}
//! ```
//! Extra fields travel with the request to the agent as context.

use crate::error::ApiError;
use serde_json::{Map, Value};

/// Longest request or session id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest agent name accepted.
pub const MAX_AGENT_NAME_LEN: usize = 64;

const ID_CHARS: &str = "letters, digits and . _ - : @ =";

/// Who is calling, as the front door vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No authorizer ran (a public API, a direct invoke, the local server): a `user_id` in the
    /// body names the user.
    Anonymous,
    /// An authorizer (ours, Cognito, a JWT authorizer, IAM) vouched for this user.
    Authenticated(String),
    /// An authorizer ran but named nobody: the user is unknown, and a body `user_id` is ignored.
    AuthorizedUnnamed,
}

impl Caller {
    /// The caller for a known principal (`Some`), else anonymous.
    pub fn from_principal(principal: Option<&str>) -> Self {
        match principal {
            Some(p) => Caller::Authenticated(p.to_owned()),
            None => Caller::Anonymous,
        }
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Caller::Authenticated(user) => Some(user),
            Caller::Anonymous | Caller::AuthorizedUnnamed => None,
        }
    }
}

/// One chat turn to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// Identifies this request end to end (queue messages, stored answer, polling).
    pub request_id: String,
    /// The conversation this turn belongs to.
    pub session_id: String,
    /// Who asked: the authorizer's principal, else the body's `user_id`.
    pub user_id: Option<String>,
    /// Requested agent; `None` means the configured default.
    pub agent: Option<String>,
    /// The user's message.
    pub prompt: String,
    /// Every other field of the body, passed to the agent as context.
    pub context: Map<String, Value>,
    /// Whether the runtime made the session id up (the client named none).
    pub session_generated: bool,
    /// `"stream"` in the body, when given: `true` answers as server-sent events, `false` as
    /// JSON whatever the `Accept` header says (absent: the header decides). Not part of the
    /// request's fingerprint.
    pub stream: Option<bool>,
    /// When the answer must be ready: the Lambda invocation's deadline less a margin, so the
    /// client gets a JSON error instead of a timed-out function. `None`: no limit but the
    /// model's own timeouts.
    pub deadline: Option<tokio::time::Instant>,
    /// The conversation so far, as the client keeps it (`"history"` in the body): messages
    /// `{"role": "user" | "assistant" | "system", "content": "<text>"}`, oldest first. When
    /// given, the session store is neither read nor written: these are the earlier turns (the
    /// way Chat Completions clients send the whole conversation every time), and `session_id`
    /// only names the conversation (FIFO order, the answer's `session_id`). Part of the
    /// request's fingerprint.
    pub history: Option<Vec<Value>>,
    /// Tools the client runs itself (a protocol surface's front-end tools): `[{"name",
    /// "description", "parameters"}]`, offered to the model beside the agent's own when the
    /// client keeps the conversation (`history`). A call of one ends the run with the call in
    /// the answer's `tool_calls`; the client sends the result in its next request. Not read
    /// from a chat API body; carried in queue messages. Part of the fingerprint.
    pub client_tools: Vec<Value>,
    /// The continuation of a run paused for a person's approval: `{"state", "decisions",
    /// "pause"}` (see `ak_runtime::exec::approval`). Carried in queue messages (`"resume"`);
    /// from a chat API body it is an extra like any other. Not part of the fingerprint.
    pub resume: Option<Value>,
}

/// The roles a `history` message may have.
pub const HISTORY_ROLES: &[&str] = &["user", "assistant", "system"];

/// Where a request body comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A client of the chat API.
    Client,
    /// The input queue: what a protocol surface made of its request, which may also carry
    /// client tools, tool calls and results in its history, and continue after them without a
    /// prompt.
    Queue,
}

impl RunRequest {
    /// Parses a request body in either shape. An authenticated `caller` is the user whatever
    /// the body says; the body's `user_id` counts only for anonymous callers.
    pub fn from_json(body: &[u8], caller: &Caller) -> Result<Self, ApiError> {
        Self::from_value(parse_json_object(body)?, caller)
    }

    /// Parses an already-decoded body in either shape.
    pub fn from_value(value: Value, caller: &Caller) -> Result<Self, ApiError> {
        Self::parse(value, caller, Origin::Client)
    }

    /// Parses an input queue message's body ([`RunRequest::queue_body`]): a chat API body, or
    /// what a protocol surface sent (client tools, tool calls and results in `history`, and
    /// no prompt when the history ends with tool results).
    pub fn from_queue_body(value: Value, caller: &Caller) -> Result<Self, ApiError> {
        Self::parse(value, caller, Origin::Queue)
    }

    fn parse(value: Value, caller: &Caller, origin: Origin) -> Result<Self, ApiError> {
        let Value::Object(mut outer) = value else {
            return Err(not_an_object());
        };
        let is_envelope = !outer.contains_key("prompt") && outer.contains_key("body");
        let mut fields = if is_envelope {
            let inner = match outer.remove("body") {
                Some(Value::Object(inner)) => inner,
                // A body passed through as JSON text, as API Gateway does.
                Some(Value::String(text)) => match serde_json::from_str(&text) {
                    Ok(Value::Object(inner)) => inner,
                    _ => {
                        return Err(ApiError::bad_request(
                            "body must be a JSON object like {\"prompt\": \"Hello\"}",
                        ));
                    }
                },
                _ => {
                    return Err(ApiError::bad_request(
                        "body must be a JSON object like {\"prompt\": \"Hello\"}",
                    ));
                }
            };
            // Envelope fields (request_id, user_id, extras) first; the inner body wins on clashes.
            outer.extend(inner);
            outer
        } else {
            outer
        };

        let history = match fields.remove("history") {
            None | Some(Value::Null) => None,
            Some(value) => Some(parse_history(value, origin)?),
        };
        let client_tools = match (origin, fields.remove("client_tools")) {
            (Origin::Queue, Some(Value::Array(tools))) => tools,
            (Origin::Client, Some(extra)) => {
                // Not a field of the chat API: an extra like any other.
                fields.insert("client_tools".into(), extra);
                Vec::new()
            }
            _ => Vec::new(),
        };
        let resume = match (origin, fields.remove("resume")) {
            (Origin::Queue, Some(resume @ Value::Object(_))) => Some(resume),
            (Origin::Client, Some(extra)) => {
                fields.insert("resume".into(), extra);
                None
            }
            _ => None,
        };
        let continues = origin == Origin::Queue
            && history
                .as_ref()
                .and_then(|h| h.last())
                .is_some_and(|m| m["role"] == "tool");
        let prompt = match fields.remove("prompt") {
            Some(Value::String(p)) if p.is_empty() && continues => p,
            None | Some(Value::Null) if continues => String::new(),
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request(
                    "prompt is required: send {\"prompt\": \"your message\"}",
                ));
            }
            Some(Value::String(p)) if p.trim().is_empty() => {
                return Err(ApiError::bad_request("prompt must not be empty"));
            }
            Some(Value::String(p)) => p,
            Some(_) => return Err(ApiError::bad_request("prompt must be a string")),
        };
        let agent = optional_string(&mut fields, "agent")?;
        if let Some(agent) = &agent {
            check_agent_name(agent).map_err(|m| ApiError::bad_request(format!("agent: {m}")))?;
        }
        let request_id = optional_string(&mut fields, "request_id")?;
        if let Some(id) = &request_id {
            check_id("request_id", id)?;
        }
        let session_id = optional_string(&mut fields, "session_id")?;
        if let Some(id) = &session_id {
            check_id("session_id", id)?;
        }
        let stream = match fields.remove("stream") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => return Err(ApiError::bad_request("stream must be true or false")),
        };
        let body_user = optional_string(&mut fields, "user_id")?;
        let user_id = match caller {
            Caller::Authenticated(p) => Some(p.clone()),
            Caller::Anonymous => body_user,
            Caller::AuthorizedUnnamed => None,
        };
        if let Some(user) = &user_id {
            check_user_id(user)?;
        }
        Ok(RunRequest {
            request_id: request_id.unwrap_or_else(new_id),
            session_generated: session_id.is_none(),
            session_id: session_id.unwrap_or_else(new_id),
            user_id,
            agent,
            prompt,
            context: fields,
            stream,
            deadline: None,
            history,
            client_tools,
            resume,
        })
    }

    /// What makes this request the request it is, as a hex SHA-256: the prompt, the agent, the
    /// session (when the client named one), the user and the extra fields. The same request
    /// sent again has the same fingerprint; ids the runtime generated do not count, so a retry
    /// of a request without `session_id` is still the same request.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let canonical = serde_json::json!({
            "prompt": self.prompt,
            "agent": self.agent,
            "session_id": (!self.session_generated).then_some(&self.session_id),
            "user_id": self.user_id,
            "history": self.history,
            "client_tools": (!self.client_tools.is_empty()).then_some(&self.client_tools),
            // serde_json maps are sorted by key, so equal extras serialize equally.
            "context": canonical(&Value::Object(self.context.clone())),
        });
        let digest = sha2::Sha256::digest(canonical.to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The queue message body: prompt, agent, session_id, the client's `history` (when given)
    /// and the extras.
    pub fn queue_body(&self) -> Value {
        let mut body = self.context.clone();
        body.insert("prompt".into(), Value::String(self.prompt.clone()));
        if let Some(agent) = &self.agent {
            body.insert("agent".into(), Value::String(agent.clone()));
        }
        body.insert("session_id".into(), Value::String(self.session_id.clone()));
        if let Some(history) = &self.history {
            body.insert("history".into(), Value::Array(history.clone()));
        }
        if !self.client_tools.is_empty() {
            body.insert(
                "client_tools".into(),
                Value::Array(self.client_tools.clone()),
            );
        }
        if let Some(resume) = &self.resume {
            body.insert("resume".into(), resume.clone());
        }
        Value::Object(body)
    }
}

/// Checks a body's `history`: an array of `{"role", "content"}` messages with a role of
/// [`HISTORY_ROLES`] and text content; returns the messages with only those two fields. From
/// the queue, assistant messages may also carry `tool_calls` (Chat Completions' shape) and
/// `tool` messages a `tool_call_id` (a protocol surface's client tools).
fn parse_history(value: Value, origin: Origin) -> Result<Vec<Value>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request(
            "history must be an array of messages like {\"role\": \"user\", \"content\": \"Hello\"}",
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let role = item.get("role").and_then(Value::as_str);
            let extended = origin == Origin::Queue;
            let known =
                role.is_some_and(|r| HISTORY_ROLES.contains(&r) || (extended && r == "tool"));
            let Some(role) = role.filter(|_| known) else {
                return Err(ApiError::bad_request(format!(
                    "history[{i}].role must be one of {}",
                    HISTORY_ROLES.join(", ")
                )));
            };
            let calls = item.get("tool_calls").filter(|c| c.is_array());
            let content = item.get("content").and_then(Value::as_str);
            let Some(content) = content.or((extended && calls.is_some()).then_some("")) else {
                return Err(ApiError::bad_request(format!(
                    "history[{i}].content must be text"
                )));
            };
            let mut message = serde_json::json!({"role": role, "content": content});
            if extended {
                if let (Some(calls), "assistant") = (calls, role) {
                    message["tool_calls"] = calls.clone();
                }
                if role == "tool" {
                    message["tool_call_id"] = item.get("tool_call_id").cloned().unwrap_or_default();
                }
            }
            Ok(message)
        })
        .collect()
}

/// JSON as a fingerprint sees it: members whose value is `null` count as absent, and a number
/// with an integral value is that integer (`1.0` is `1`), at any depth.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Value::from(f as i64)
            }
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

/// A fresh random id (UUID v4) for requests and sessions.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The request id of a poll: `?request_id=` in the query, else `{"request_id"}` in the body.
pub fn poll_request_id(query_id: Option<&str>, body: &[u8]) -> Result<String, ApiError> {
    let id = match query_id {
        Some(id) => id.to_owned(),
        None if body.iter().all(u8::is_ascii_whitespace) => {
            return Err(ApiError::bad_request(
                "request_id is required: GET ...?request_id=<id> or a JSON body {\"request_id\": \"<id>\"}",
            ));
        }
        None => {
            let mut fields = match parse_json_object(body)? {
                Value::Object(map) => map,
                _ => return Err(not_an_object()),
            };
            optional_string(&mut fields, "request_id")?.ok_or_else(|| {
                ApiError::bad_request(
                    "request_id is required: GET ...?request_id=<id> or a JSON body {\"request_id\": \"<id>\"}",
                )
            })?
        }
    };
    check_id("request_id", &id)?;
    Ok(id)
}

/// Checks a request or session id: 1–128 characters of letters, digits and `. _ - : @ =`.
pub fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '='));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1–{MAX_ID_LEN} characters of {ID_CHARS}"
        )))
    }
}

fn check_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_USER_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "user_id must be 1–{MAX_USER_ID_LEN} characters without control characters"
        )));
    }
    Ok(())
}

/// Checks an agent name: 1–64 characters of letters, digits, `_` and `-`.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_AGENT_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "an agent name is 1–{MAX_AGENT_NAME_LEN} characters of letters, digits, _ and -"
        ))
    }
}

fn parse_json_object(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("request body must be UTF-8 encoded JSON"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: send a JSON object like {\"prompt\": \"Hello\"}",
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(not_an_object())
    }
}

fn not_an_object() -> ApiError {
    ApiError::bad_request("request body must be a JSON object like {\"prompt\": \"Hello\"}")
}

fn optional_string(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RunRequest, String> {
        RunRequest::from_json(v.to_string().as_bytes(), &Caller::Anonymous)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn simple_shape_keeps_fields_and_extras() {
        let r = parse(json!({
            "prompt": "Hello agent", "agent": "assistant", "session_id": "user-123",
            "locale": "en-GB", "meta": {"a": 1}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.prompt, "Hello agent");
        assert_eq!(r.agent.as_deref(), Some("assistant"));
        assert_eq!(r.session_id, "user-123");
        assert_eq!(r.context.get("locale"), Some(&json!("en-GB")));
        assert_eq!(r.context.get("meta"), Some(&json!({"a": 1})));
        assert!(
            uuid::Uuid::parse_str(&r.request_id).is_ok(),
            "request_id generated"
        );
    }

    #[test]
    fn envelope_shape_takes_ids_from_the_envelope() {
        let r = parse(json!({
            "request_id": "req-123", "user_id": "user-123",
            "body": {"prompt": "Hello", "agent": "math", "session_id": "s-1", "x": true}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.request_id, "req-123");
        assert_eq!(r.user_id.as_deref(), Some("user-123"));
        assert_eq!(r.agent.as_deref(), Some("math"));
        assert_eq!(r.session_id, "s-1");
        assert_eq!(r.context.get("x"), Some(&json!(true)));
        assert!(!r.context.contains_key("body"));
    }

    #[test]
    fn envelope_body_may_be_json_text() {
        let r = parse(json!({"request_id": "r1", "body": "{\"prompt\": \"hi\"}"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.request_id.as_str(), r.prompt.as_str()), ("r1", "hi"));
    }

    #[test]
    fn missing_ids_are_generated_and_distinct() {
        let a = parse(json!({"prompt": "a"})).unwrap_or_else(|e| panic!("{e}"));
        let b = parse(json!({"prompt": "b"})).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.request_id, b.request_id);
        assert_ne!(a.session_id, b.session_id);
        assert_eq!(a.agent, None);
    }

    #[test]
    fn the_principal_overrides_a_body_user_id() {
        let body = json!({"prompt": "hi", "user_id": "mallory"}).to_string();
        let alice = Caller::Authenticated("alice".into());
        let r = RunRequest::from_json(body.as_bytes(), &alice).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.user_id.as_deref(), Some("alice"));
        let body = json!({"user_id": "mallory", "body": {"prompt": "hi"}}).to_string();
        let r = RunRequest::from_json(body.as_bytes(), &alice).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.user_id.as_deref(), Some("alice"));
        let r = RunRequest::from_json(body.as_bytes(), &Caller::AuthorizedUnnamed)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.user_id, None,
            "an authorized caller cannot name a user in the body"
        );
    }

    #[test]
    fn every_validation_error_names_the_field() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "body is empty"),
            (b"   ", "body is empty"),
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "must be a JSON object"),
            (b"\"hello\"", "must be a JSON object"),
            (&[0xff, 0xfe, 0x7b], "UTF-8"),
            (br#"{}"#, "prompt is required"),
            (br#"{"prompt": null}"#, "prompt is required"),
            (br#"{"prompt": ""}"#, "prompt must not be empty"),
            (br#"{"prompt": "  \n "}"#, "prompt must not be empty"),
            (br#"{"prompt": 42}"#, "prompt must be a string"),
            (br#"{"prompt": "x", "agent": 7}"#, "agent must be a string"),
            (br#"{"prompt": "x", "agent": "no spaces"}"#, "agent:"),
            (
                br#"{"prompt": "x", "session_id": ""}"#,
                "session_id must be",
            ),
            (
                br#"{"prompt": "x", "session_id": "a b"}"#,
                "session_id must be",
            ),
            (
                br#"{"prompt": "x", "session_id": ["a"]}"#,
                "session_id must be a string",
            ),
            (
                br#"{"prompt": "x", "request_id": "a/b"}"#,
                "request_id must be",
            ),
            (br#"{"prompt": "x", "user_id": ""}"#, "user_id must be"),
            (
                br#"{"request_id": "r", "body": 5}"#,
                "body must be a JSON object",
            ),
            (br#"{"request_id": "r", "body": {}}"#, "prompt is required"),
        ];
        for (body, expected) in cases {
            let err = RunRequest::from_json(body, &Caller::Anonymous)
                .err()
                .unwrap_or_else(|| panic!("{:?} should fail", String::from_utf8_lossy(body)));
            assert_eq!(err.status_code(), 400);
            assert!(
                err.to_string().contains(expected),
                "{:?}: {err} should mention {expected:?}",
                String::from_utf8_lossy(body)
            );
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        let body = json!({"prompt": "x", "session_id": long}).to_string();
        assert!(RunRequest::from_json(body.as_bytes(), &Caller::Anonymous).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart_but_not_their_generated_ids() {
        let fp = |v: Value| parse(v).map(|r| r.fingerprint()).unwrap_or_default();
        let base = fp(json!({"prompt": "what is 12 * 7", "request_id": "r"}));
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            fp(json!({"prompt": "what is 12 * 7", "request_id": "r"}))
        );
        assert_eq!(
            base,
            fp(json!({"request_id": "r", "body": {"prompt": "what is 12 * 7"}}))
        );
        for other in [
            json!({"prompt": "who won the battle of Hastings", "request_id": "r"}),
            json!({"prompt": "what is 12 * 7", "agent": "math"}),
            json!({"prompt": "what is 12 * 7", "session_id": "s"}),
            json!({"prompt": "what is 12 * 7", "user_id": "u"}),
            json!({"prompt": "what is 12 * 7", "locale": "en"}),
        ] {
            assert_ne!(base, fp(other.clone()), "{other}");
        }
        assert_eq!(
            fp(json!({"prompt": "p", "a": 1, "b": 2})),
            fp(json!({"b": 2, "prompt": "p", "a": 1})),
            "field order does not matter"
        );
        let same = fp(json!({"prompt": "p", "n": 1, "deep": {"x": 2, "y": [3]}}));
        for spelled in [
            json!({"prompt": "p", "n": 1.0, "deep": {"x": 2.0, "y": [3.0]}}),
            json!({"prompt": "p", "n": 1, "z": null, "deep": {"x": 2, "y": [3], "w": null}}),
        ] {
            assert_eq!(same, fp(spelled.clone()), "{spelled}");
        }
        assert_ne!(
            same,
            fp(json!({"prompt": "p", "n": 1.5, "deep": {"x": 2, "y": [3]}}))
        );
    }

    #[test]
    fn queue_body_round_trips() {
        let r = parse(json!({"prompt": "p", "agent": "math", "session_id": "s", "k": 1}))
            .unwrap_or_else(|e| panic!("{e}"));
        let again = RunRequest::from_value(r.queue_body(), &Caller::Anonymous)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.prompt, r.prompt);
        assert_eq!(again.agent, r.agent);
        assert_eq!(again.session_id, r.session_id);
        assert_eq!(again.context, r.context);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_and_fail_as_400(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Err(e) = RunRequest::from_json(&bytes, &Caller::Anonymous) {
                proptest::prop_assert_eq!(e.status_code(), 400);
            }
            let _ = poll_request_id(None, &bytes);
        }

        #[test]
        fn any_valid_prompt_round_trips_through_the_queue_body(
            prompt in "[^\\s].{0,200}",
            session in "[A-Za-z0-9._:@=-]{1,128}",
            extra in ".{0,50}",
        ) {
            let body = json!({"prompt": prompt, "session_id": session, "extra": extra});
            let user = Caller::Authenticated("user".into());
            let r = RunRequest::from_json(body.to_string().as_bytes(), &user);
            let r = r.map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let again = RunRequest::from_value(r.queue_body(), &user)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(&again.prompt, &r.prompt);
            proptest::prop_assert_eq!(&again.session_id, &session);
            proptest::prop_assert_eq!(&again.context, &r.context);
        }
    }

    #[test]
    fn poll_id_comes_from_query_or_body() {
        assert_eq!(
            poll_request_id(Some("req-1"), b"").ok().as_deref(),
            Some("req-1")
        );
        assert_eq!(
            poll_request_id(None, br#"{"request_id": "req-2"}"#)
                .ok()
                .as_deref(),
            Some("req-2")
        );
        for (q, b) in [
            (None, &b""[..]),
            (None, b"{}"),
            (Some("bad id"), b""),
            (None, b"{x"),
        ] {
            let e = poll_request_id(q, b).err();
            assert_eq!(e.map(|e| e.status_code()), Some(400), "{q:?} {b:?}");
        }
    }
}
