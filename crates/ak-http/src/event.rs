//! The Lambda events the request handler receives, read from plain JSON: which front door sent
//! each one, the HTTP request inside it, who the caller is, and the answer in that door's format.
//!
//! Front doors: API Gateway REST APIs (payload 1.0, also HTTP APIs configured for 1.0), HTTP APIs
//! (payload 2.0), function URLs, Application Load Balancer targets (single or multi-value
//! headers), and direct invokes carrying one of the two chat payload shapes (or a keep-warm
//! ping). Shapes follow the AWS documentation of each integration ("Lambda proxy integration"
//! for REST, "payload format version 2.0" for HTTP APIs and function URLs, "Lambda functions as
//! targets" for ALB).
//!
//! Nothing here panics or fails on what an event holds: every field is read tolerantly
//! (missing, null or of the wrong type counts as absent), header names and values that HTTP
//! cannot carry are dropped, paths and query strings with characters a URI cannot hold are
//! percent-encoded, and a body flagged base64 that is not base64 becomes a [`Problem`] that only
//! the routes reading a body report (400). An event from no front door is [`Incoming::Unrecognised`] and
//! answered with a clear 400 in a shape every HTTP front door understands.

use ak_core::request::Caller;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;

/// The path of a request as its client asked for it, in front of everything the front door
/// strips (a REST API's stage): for URLs the API hands back to the client (an A2A card's
/// endpoint). Absent on requests not decoded from an event (the local server's: their URI
/// path is what the client asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicPath(pub String);
use lambda_http::{Body, Request, RequestExt};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// When the invocation must have answered; put in a request's extensions by the API when it
/// answers a Lambda event.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub tokio::time::Instant);

/// Which front door an event came through; it decides the answer's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// API Gateway REST API (or an HTTP API with payload format 1.0).
    RestApi,
    /// API Gateway HTTP API, payload format 2.0.
    HttpApi,
    /// A Lambda function URL (payload format 2.0).
    FunctionUrl,
    /// An Application Load Balancer target group.
    Alb {
        /// The target group has multi-value headers enabled (answer with `multiValueHeaders`).
        multi_value: bool,
    },
    /// `lambda invoke` with a chat payload: the answer is the JSON body itself.
    DirectInvoke,
}

impl FrontDoor {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontDoor::RestApi => "rest_api",
            FrontDoor::HttpApi => "http_api",
            FrontDoor::FunctionUrl => "function_url",
            FrontDoor::Alb { .. } => "alb",
            FrontDoor::DirectInvoke => "direct_invoke",
        }
    }
}

/// Something wrong with a part of an event that only some routes need (today: the body). Put
/// in the request's extensions; the routes that read the body answer 400 with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// A decoded event.
#[derive(Debug)]
pub enum Incoming {
    /// An HTTP request (or a direct invoke dressed as one: `POST` to the chat path).
    Request {
        /// Where it came from.
        door: FrontDoor,
        /// The request, with [`Caller`] (and any [`Problem`]) in its extensions.
        request: Box<Request>,
    },
    /// A scheduled keep-warm ping (`{"warmup": true}` or an EventBridge "Scheduled Event").
    KeepWarm,
    /// An HTTP event that cannot be answered as a request (no method, say): answered 400 in its
    /// door's format.
    Malformed {
        /// Where it came from.
        door: FrontDoor,
        /// What is wrong.
        problem: String,
    },
    /// Not an event of any front door.
    Unrecognised(String),
}

/// How to read events: where direct invokes go and where identity comes from.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The chat path, where direct invokes are routed.
    pub chat_path: String,
    /// The claim of a Cognito, JWT or Lambda authorizer that names the user (`sub` by default).
    pub principal_claim: String,
    /// Take an ALB's `x-amzn-oidc-identity` header as the user. Only safe when every listener
    /// rule in front of the function authenticates (an ALB that does not authenticate passes a
    /// client's own header through); off, the header only stops a body `user_id` from counting.
    pub trust_alb_oidc: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            chat_path: "/api/v1/chat".to_owned(),
            principal_claim: "sub".to_owned(),
            trust_alb_oidc: false,
        }
    }
}

/// Reads an event.
pub fn decode(event: &Value, options: &DecodeOptions) -> Incoming {
    let chat_path = options.chat_path.as_str();
    let Value::Object(e) = event else {
        return Incoming::Unrecognised(format!(
            "the event is JSON {}, not an object; send an API Gateway, function URL or ALB \
             event, or {{\"prompt\": \"...\"}}",
            kind_of(event)
        ));
    };
    let context = obj(e, "requestContext");
    if let Some(ctx) = context {
        if ctx.contains_key("elb") {
            let multi_value = e.get("multiValueHeaders").is_some_and(Value::is_object);
            return http_event(e, FrontDoor::Alb { multi_value }, options);
        }
        if str_at(e, "version") == Some("2.0") || obj(ctx, "http").is_some() {
            let url = str_at(ctx, "domainName").is_some_and(|d| d.contains(".lambda-url."));
            let door = if url {
                FrontDoor::FunctionUrl
            } else {
                FrontDoor::HttpApi
            };
            return http_event(e, door, options);
        }
        if ["httpMethod", "resource", "path"]
            .iter()
            .any(|k| e.contains_key(*k))
            || ctx.contains_key("httpMethod")
            || ctx.contains_key("resourcePath")
        {
            return http_event(e, FrontDoor::RestApi, options);
        }
    }
    if e.get("warmup").and_then(Value::as_bool) == Some(true)
        || str_at(e, "detail-type") == Some("Scheduled Event")
    {
        return Incoming::KeepWarm;
    }
    let chat_shaped = context.is_none()
        && (e.contains_key("prompt")
            || (e.contains_key("body")
                && !e.contains_key("httpMethod")
                && !e.contains_key("Records")));
    if chat_shaped {
        return direct_invoke(event, chat_path);
    }
    let what = if e.contains_key("Records") {
        "an event of another AWS service (it has Records)".to_owned()
    } else if e.contains_key("source") && e.contains_key("detail-type") {
        "an EventBridge event".to_owned()
    } else if e.is_empty() {
        "an empty object".to_owned()
    } else {
        "not an API Gateway, function URL or ALB event".to_owned()
    };
    Incoming::Unrecognised(format!(
        "unrecognised event ({what}); this function answers API Gateway REST and HTTP APIs, \
         function URLs, ALB targets, and direct invokes of {{\"prompt\": \"...\"}} or \
         {{\"request_id\": \"...\", \"body\": {{\"prompt\": \"...\"}}}}"
    ))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn obj<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    map.get(key).and_then(Value::as_object)
}

fn str_at<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A scalar as text (authorizer contexts carry numbers and booleans too).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => non_empty(Some(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn direct_invoke(event: &Value, chat_path: &str) -> Incoming {
    let mut request = http::Request::new(Body::Text(event.to_string()));
    *request.method_mut() = Method::POST;
    if let Ok(uri) = chat_path.parse() {
        *request.uri_mut() = uri;
    }
    request.extensions_mut().insert(Caller::Anonymous);
    let request = request.with_raw_http_path(chat_path.to_owned());
    Incoming::Request {
        door: FrontDoor::DirectInvoke,
        request: Box::new(request),
    }
}

fn http_event(e: &Map<String, Value>, door: FrontDoor, options: &DecodeOptions) -> Incoming {
    let ctx = obj(e, "requestContext");
    let v2 = matches!(door, FrontDoor::HttpApi | FrontDoor::FunctionUrl);
    let method_text = if v2 {
        ctx.and_then(|c| obj(c, "http"))
            .and_then(|h| str_at(h, "method"))
    } else {
        str_at(e, "httpMethod").or_else(|| ctx.and_then(|c| str_at(c, "httpMethod")))
    };
    let Some(method_text) = method_text else {
        return Incoming::Malformed {
            door,
            problem: "the event has no HTTP method (httpMethod / requestContext.http.method)"
                .to_owned(),
        };
    };
    let Ok(method) = Method::from_bytes(method_text.trim().to_ascii_uppercase().as_bytes()) else {
        return Incoming::Malformed {
            door,
            problem: format!("the event's HTTP method {method_text:?} is not an HTTP method"),
        };
    };
    let raw_path = if v2 {
        str_at(e, "rawPath").or_else(|| {
            ctx.and_then(|c| obj(c, "http"))
                .and_then(|h| str_at(h, "path"))
        })
    } else {
        str_at(e, "path")
            .or_else(|| ctx.and_then(|c| str_at(c, "path")))
            .or_else(|| str_at(e, "resource"))
    }
    .unwrap_or("/");
    let path = if raw_path.starts_with('/') {
        raw_path.to_owned()
    } else {
        format!("/{raw_path}")
    };
    let query = match door {
        FrontDoor::HttpApi | FrontDoor::FunctionUrl => match str_at(e, "rawQueryString") {
            Some(raw) => parse_query(raw),
            None => query_map(e, false, false),
        },
        FrontDoor::Alb { .. } => query_map(e, true, true),
        _ => query_map(e, true, false),
    };
    let headers = headers(e, v2);
    let caller = match door {
        FrontDoor::Alb { .. } => alb_caller(&headers, options.trust_alb_oidc),
        _ => caller(e, door, &options.principal_claim),
    };
    let mut problems = Vec::new();
    let body = body(e, &mut problems);

    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri(&path, &query);
    *request.headers_mut() = headers;
    let extensions = request.extensions_mut();
    extensions.insert(caller);
    if let Some(problem) = problems.into_iter().next() {
        extensions.insert(problem);
    }
    // The path as the client asked for it: a REST API's event leaves the stage out of `path`
    // (its request context has it).
    let public = match door {
        FrontDoor::RestApi => ctx.and_then(|c| str_at(c, "path")).unwrap_or(&path),
        _ => &path,
    };
    extensions.insert(PublicPath(public.to_owned()));
    let mut request = request
        .with_raw_http_path(path)
        .with_query_string_parameters(query);
    // Best effort, for custom routes that look at the typed context.
    if let Some(ctx) = ctx {
        let typed = match door {
            FrontDoor::RestApi => serde_json::from_value(Value::Object(ctx.clone()))
                .ok()
                .map(RequestContext::ApiGatewayV1),
            FrontDoor::HttpApi | FrontDoor::FunctionUrl => {
                serde_json::from_value(Value::Object(ctx.clone()))
                    .ok()
                    .map(RequestContext::ApiGatewayV2)
            }
            _ => None,
        };
        if let Some(typed) = typed {
            request = request.with_request_context(typed);
        }
    }
    Incoming::Request {
        door,
        request: Box::new(request),
    }
}

/// Query parameters from `multiValueQueryStringParameters` (else `queryStringParameters`);
/// ALB passes values as the client encoded them, so `decode` them. A parameter whose list holds
/// no text (empty, or only `null`s, objects and lists) is left out: every parameter kept has at
/// least one value, which `lambda_http`'s query map assumes (it indexes the first).
fn query_map(e: &Map<String, Value>, multi: bool, decode: bool) -> HashMap<String, Vec<String>> {
    let text = |s: &str| {
        if decode {
            percent_decode(s)
        } else {
            s.to_owned()
        }
    };
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if multi && let Some(m) = obj(e, "multiValueQueryStringParameters") {
        for (k, values) in m {
            let values = values.as_array().map(Vec::as_slice).unwrap_or_default();
            out.entry(text(k))
                .or_default()
                .extend(values.iter().filter_map(query_value).map(|v| text(&v)));
        }
        out.retain(|_, values| !values.is_empty());
        return out;
    }
    if let Some(m) = obj(e, "queryStringParameters") {
        for (k, v) in m {
            if let Some(v) = scalar(v).or_else(|| v.as_str().map(str::to_owned)) {
                out.entry(text(k)).or_default().push(text(&v));
            }
        }
    }
    out
}

/// A query parameter's value as an event carries it: text (empty too) or a number.
fn query_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `a=1&b=two%20words&c` → `{a: [1], b: ["two words"], c: [""]}`; anything goes, nothing fails.
pub fn parse_query(raw: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    out
}

/// Decodes `%XX` and `+` (form encoding); a malformed escape stays as it is.
pub fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    hi * 16 + lo
                }
                _ => b'%',
            },
            b'+' => b' ',
            b => b,
        };
        out.push(decoded);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes every byte a URI path or query component cannot carry as is.
fn escape(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*,;:@".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URI (path and query only) that always parses.
fn uri(path: &str, query: &HashMap<String, Vec<String>>) -> http::Uri {
    let mut text = escape(path, b"/%");
    let mut pairs: Vec<String> = query
        .iter()
        .flat_map(|(k, values)| {
            values
                .iter()
                .map(move |v| format!("{}={}", escape(k, b""), escape(v, b"")))
        })
        .collect();
    pairs.sort();
    if !pairs.is_empty() {
        text.push('?');
        text.push_str(&pairs.join("&"));
    }
    text.parse().unwrap_or_else(|_| http::Uri::from_static("/"))
}

/// Headers from `multiValueHeaders` (else `headers`), plus HTTP API `cookies`; names and values
/// HTTP cannot carry are dropped.
fn headers(e: &Map<String, Value>, v2: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut add = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            out.append(n, v);
        }
    };
    if let Some(m) = obj(e, "multiValueHeaders") {
        for (name, values) in m {
            for value in values.as_array().into_iter().flatten().filter_map(scalar) {
                add(name, &value);
            }
        }
    } else if let Some(m) = obj(e, "headers") {
        for (name, value) in m {
            if let Some(value) = scalar(value) {
                add(name, &value);
            }
        }
    }
    if v2 && let Some(cookies) = e.get("cookies").and_then(Value::as_array) {
        let joined: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            add("cookie", &joined.join("; "));
        }
    }
    out
}

fn body(e: &Map<String, Value>, problems: &mut Vec<Problem>) -> Body {
    let text = match e.get("body") {
        None | Some(Value::Null) => return Body::Empty,
        Some(Value::String(s)) => s.clone(),
        // Hand-made test events sometimes carry the body as JSON rather than text.
        Some(other) => other.to_string(),
    };
    let base64 = match e.get("isBase64Encoded") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    if !base64 {
        return if text.is_empty() {
            Body::Empty
        } else {
            Body::Text(text)
        };
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.is_empty() => Body::Empty,
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        },
        Err(_) => {
            problems.push(Problem(
                "the request body is marked isBase64Encoded but is not valid base64".to_owned(),
            ));
            Body::Empty
        }
    }
}

/// Behind an ALB: the user its OIDC authentication names (`x-amzn-oidc-identity`), when trusted;
/// a request carrying the header but not trusted is served without a user, so a body `user_id`
/// cannot name one either.
fn alb_caller(headers: &HeaderMap, trust: bool) -> Caller {
    let identity = headers
        .get("x-amzn-oidc-identity")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match identity {
        Some(user) if trust => Caller::Authenticated(user.to_owned()),
        Some(_) => Caller::AuthorizedUnnamed,
        None => Caller::Anonymous,
    }
}

/// Who is calling, from the authorizer context API Gateway or a function URL put in the event:
/// our authorizer's `user_id`, else a Lambda authorizer's `principalId`, else the
/// `principal_claim` of a Cognito user pool (REST), JWT (HTTP API) or Lambda authorizer, else
/// the IAM caller's ARN. An authorizer context without any of these is
/// [`Caller::AuthorizedUnnamed`].
fn caller(e: &Map<String, Value>, door: FrontDoor, claim: &str) -> Caller {
    let Some(ctx) = obj(e, "requestContext") else {
        return Caller::Anonymous;
    };
    let authorizer = obj(ctx, "authorizer").filter(|a| !a.is_empty());
    let found = match door {
        FrontDoor::RestApi => authorizer
            .and_then(|a| {
                a.get("user_id")
                    .and_then(scalar)
                    .or_else(|| a.get("principalId").and_then(scalar))
                    .or_else(|| claims(a.get("claims"), claim))
                    // A Lambda authorizer's context is flattened into `authorizer`.
                    .or_else(|| a.get(claim).and_then(scalar))
            })
            .or_else(|| {
                obj(ctx, "identity")
                    .and_then(|i| i.get("userArn"))
                    .and_then(scalar)
            }),
        FrontDoor::HttpApi | FrontDoor::FunctionUrl => authorizer.and_then(|a| {
            obj(a, "lambda")
                .and_then(|l| {
                    ["user_id", "principalId", claim]
                        .iter()
                        .find_map(|k| l.get(*k).and_then(scalar))
                })
                .or_else(|| obj(a, "jwt").and_then(|j| claims(j.get("claims"), claim)))
                .or_else(|| {
                    obj(a, "iam")
                        .and_then(|i| i.get("userArn"))
                        .and_then(scalar)
                })
        }),
        FrontDoor::Alb { .. } | FrontDoor::DirectInvoke => None,
    };
    match (found, authorizer) {
        (Some(user), _) => Caller::Authenticated(user),
        (None, Some(_)) => Caller::AuthorizedUnnamed,
        (None, None) => Caller::Anonymous,
    }
}

/// A claim from a claims object (or, as some integrations pass it, JSON text of one).
fn claims(v: Option<&Value>, claim: &str) -> Option<String> {
    match v? {
        Value::Object(m) => m.get(claim).and_then(scalar),
        Value::String(text) => serde_json::from_str::<Value>(text)
            .ok()?
            .get(claim)
            .and_then(scalar),
        _ => None,
    }
}

/// The answer to `door` for `response`, in the format that door expects.
pub fn encode(door: FrontDoor, response: http::Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let (text, base64) = match body {
        Body::Empty => (String::new(), false),
        Body::Text(t) => (t, false),
        Body::Binary(b) => match String::from_utf8(b) {
            Ok(t) => (t, false),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                true,
            ),
        },
        _ => (String::new(), false),
    };
    let status = parts.status;
    if door == FrontDoor::DirectInvoke {
        let mut body: Value = serde_json::from_str(&text).unwrap_or(json!({"result": text}));
        if !status.is_success()
            && let Value::Object(map) = &mut body
        {
            map.insert("statusCode".into(), json!(status.as_u16()));
        }
        return body;
    }
    let mut single = Map::new();
    let mut multi = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        if name == http::header::SET_COOKIE {
            cookies.extend(values.iter().cloned());
        }
        if let Some(last) = values.last() {
            single.insert(name.as_str().to_owned(), json!(last));
        }
        multi.insert(name.as_str().to_owned(), json!(values));
    }
    let mut answer = json!({
        "statusCode": status.as_u16(),
        "body": text,
        "isBase64Encoded": base64,
    });
    match door {
        FrontDoor::RestApi => {
            answer["headers"] = Value::Object(single);
            answer["multiValueHeaders"] = Value::Object(multi);
        }
        FrontDoor::HttpApi | FrontDoor::FunctionUrl => {
            single.remove("set-cookie");
            answer["headers"] = Value::Object(single);
            answer["cookies"] = json!(cookies);
        }
        FrontDoor::Alb { multi_value } => {
            answer["statusDescription"] = json!(status_description(status));
            if multi_value {
                answer["multiValueHeaders"] = Value::Object(multi);
            } else {
                answer["headers"] = Value::Object(single);
            }
        }
        FrontDoor::DirectInvoke => {}
    }
    answer
}

/// `200 OK`, as an ALB wants it.
fn status_description(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown")
    )
}

/// The answer to an event that cannot be read: a 400 in the common shape of every HTTP front
/// door (and readable JSON for a direct invoker).
pub fn unrecognised_answer(problem: &str) -> Value {
    json!({
        "statusCode": 400,
        "statusDescription": "400 Bad Request",
        "headers": {"content-type": "application/json"},
        "body": json!({"error": problem}).to_string(),
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(event: Value) -> (FrontDoor, Request) {
        match decode(&event, &DecodeOptions::default()) {
            Incoming::Request { door, request } => (door, *request),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_value_query_lists_without_text_are_left_out() {
        let (_, request) = decoded(json!({
            "httpMethod": "GET", "path": "/api/v1/app", "resource": "/{proxy+}",
            "multiValueQueryStringParameters": {
                "empty": [], "nulls": [null, {}], "blank": [""], "n": [7, "x"], "odd": "text"
            },
            "requestContext": {"stage": "prod", "httpMethod": "GET"}
        }));
        let query = request.query_string_parameters();
        assert_eq!(query.first("empty"), None);
        assert_eq!(query.first("nulls"), None);
        assert_eq!(query.first("odd"), None);
        assert_eq!(query.first("blank"), Some(""));
        assert_eq!(query.all("n"), Some(vec!["7", "x"]));
        assert_eq!(query.iter().count(), 3);
    }

    #[test]
    fn odd_characters_never_break_the_request() {
        let (door, request) = decoded(json!({
            "version": "2.0", "rawPath": "/api/v1/chat path<>\"", "rawQueryString": "request_id=abc&q=\"<script> x\"|{}",
            "headers": {"host": "bad host@x", "x-bad\nname": "v", "x-ok": "line\nbreak", "x-num": 5},
            "requestContext": {"http": {"method": "get"}, "domainName": "abc.lambda-url.us-east-1.on.aws"},
            "body": "!!!", "isBase64Encoded": true
        }));
        assert_eq!(door, FrontDoor::FunctionUrl);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.raw_http_path(), "/api/v1/chat path<>\"");
        let query = request.query_string_parameters();
        assert_eq!(query.first("q"), Some("\"<script> x\"|{}"));
        assert_eq!(query.first("request_id"), Some("abc"));
        assert!(request.headers().get("x-ok").is_none());
        assert_eq!(
            request.headers().get("x-num").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(request.extensions().get::<Problem>().is_some());
        assert!(request.body().is_empty());
    }

    #[test]
    fn doors_are_told_apart_by_their_own_shape() {
        let door = |e: Value| match decode(&e, &DecodeOptions::default()) {
            Incoming::Request { door, .. } => Some(door),
            _ => None,
        };
        assert_eq!(
            door(json!({"httpMethod": "GET", "path": "/x", "requestContext": {"stage": "p"}})),
            Some(FrontDoor::RestApi)
        );
        assert_eq!(
            door(json!({"path": "/x", "requestContext": {"httpMethod": "GET"}})),
            Some(FrontDoor::RestApi)
        );
        assert_eq!(
            door(
                json!({"httpMethod": "GET", "path": "/", "requestContext": {"elb": {}}, "multiValueHeaders": {}})
            ),
            Some(FrontDoor::Alb { multi_value: true })
        );
        assert_eq!(door(json!({"prompt": "hi"})), Some(FrontDoor::DirectInvoke));
        assert_eq!(
            door(json!({"request_id": "r", "body": {"prompt": "hi"}})),
            Some(FrontDoor::DirectInvoke)
        );
        assert!(matches!(
            decode(&json!({"Records": []}), &DecodeOptions::default()),
            Incoming::Unrecognised(_)
        ));
        assert!(matches!(
            decode(
                &json!({"resource": "/x", "requestContext": {"apiId": "a"}}),
                &DecodeOptions::default()
            ),
            Incoming::Malformed { .. }
        ));
        assert!(matches!(
            decode(&json!({"warmup": true}), &DecodeOptions::default()),
            Incoming::KeepWarm
        ));
    }

    #[test]
    fn identities_come_from_every_authorizer_shape_and_never_the_body() {
        let caller = |e: Value| {
            let (_, r) = decoded(e);
            r.extensions().get::<Caller>().cloned()
        };
        let rest = |authorizer: Value| json!({"httpMethod": "POST", "path": "/api/v1/chat", "requestContext": {"authorizer": authorizer}});
        assert_eq!(
            caller(rest(
                json!({"claims": {"sub": "cognito-1", "email": "a@b"}})
            )),
            Some(Caller::Authenticated("cognito-1".into()))
        );
        assert_eq!(
            caller(rest(json!({"principalId": "p", "user_id": "u"}))),
            Some(Caller::Authenticated("u".into()))
        );
        assert_eq!(
            caller(rest(json!({"integrationLatency": 0}))),
            Some(Caller::AuthorizedUnnamed)
        );
        assert_eq!(caller(rest(json!(null))), Some(Caller::Anonymous));
        let v2 = |authorizer: Value| json!({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET"}, "authorizer": authorizer}});
        assert_eq!(
            caller(v2(json!({"jwt": {"claims": {"sub": "j"}, "scopes": null}}))),
            Some(Caller::Authenticated("j".into()))
        );
        assert_eq!(
            caller(v2(json!({"lambda": {"user_id": "l"}}))),
            Some(Caller::Authenticated("l".into()))
        );
        assert_eq!(
            caller(v2(json!({"lambda": {"sub": "alice"}}))),
            Some(Caller::Authenticated("alice".into())),
            "the principal claim applies to Lambda authorizer contexts too"
        );
        assert_eq!(
            caller(rest(json!({"sub": "bob", "integrationLatency": 3}))),
            Some(Caller::Authenticated("bob".into()))
        );
        let alb = |trust: bool| {
            let event = json!({"httpMethod": "GET", "path": "/", "requestContext": {"elb": {}},
                "headers": {"x-amzn-oidc-identity": "alice-sub"}});
            let options = DecodeOptions {
                trust_alb_oidc: trust,
                ..DecodeOptions::default()
            };
            match decode(&event, &options) {
                Incoming::Request { request, .. } => request.extensions().get::<Caller>().cloned(),
                _ => None,
            }
        };
        assert_eq!(alb(true), Some(Caller::Authenticated("alice-sub".into())));
        assert_eq!(
            alb(false),
            Some(Caller::AuthorizedUnnamed),
            "untrusted: no user, and no body user_id either"
        );
        assert_eq!(
            caller(v2(json!({"iam": {"userArn": "arn:aws:iam::1:user/x"}}))),
            Some(Caller::Authenticated("arn:aws:iam::1:user/x".into()))
        );
    }

    #[test]
    fn answers_take_the_shape_of_their_door() {
        let response = || {
            let mut r = http::Response::new(Body::Text("{\"a\":1}".into()));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        };
        let alb = encode(FrontDoor::Alb { multi_value: false }, response());
        assert_eq!(alb["statusDescription"], "200 OK");
        assert_eq!(alb["headers"]["content-type"], "application/json");
        let alb = encode(FrontDoor::Alb { multi_value: true }, response());
        assert_eq!(
            alb["multiValueHeaders"]["content-type"],
            json!(["application/json"])
        );
        let rest = encode(FrontDoor::RestApi, response());
        assert_eq!(
            (rest["statusCode"].as_u64(), &rest["body"]),
            (Some(200), &json!("{\"a\":1}"))
        );
        let direct = encode(FrontDoor::DirectInvoke, response());
        assert_eq!(direct, json!({"a": 1}));
    }
}
