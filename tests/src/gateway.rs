//! A local stand-in for an API Gateway REST API (proxy integration, payload format 1.0) in
//! front of the built request-handler, so HTTP clients (the official SDKs of each protocol) can
//! talk to the Lambda function as deployed: each HTTP request becomes a REST API proxy event
//! for the request handler under the local Runtime API, after a REQUEST authorizer event for
//! the built authorizer when one is given, and the function's answer becomes the HTTP
//! response. Like API Gateway: a missing token is `401 {"message":"Unauthorized"}`, a Deny
//! policy `403`, the authorizer's `principalId` and context reach the function in
//! `requestContext.authorizer`, the stage (`prod`) prefixes every path, and the answer is
//! buffered (a REST API without response streaming).

use crate::runtime_api::{Outcome, RuntimeApi};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The stage name in every URL (`http://127.0.0.1:PORT/prod/api/v1/...`).
pub const STAGE: &str = "prod";

/// How long the gateway waits for the function (API Gateway's integration timeout).
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// A running gateway; stops when dropped.
pub struct RestGateway {
    /// `http://127.0.0.1:PORT/prod`: the invoke URL of the stage.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Functions {
    handler: Arc<RuntimeApi>,
    authorizer: Option<Arc<RuntimeApi>>,
}

impl RestGateway {
    /// A gateway invoking the request handler behind `handler` (and, when given, the
    /// authorizer behind `authorizer` first).
    pub async fn start(
        handler: Arc<RuntimeApi>,
        authorizer: Option<Arc<RuntimeApi>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/{STAGE}", listener.local_addr()?);
        let functions = Arc::new(Functions {
            handler,
            authorizer,
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let functions = functions.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let functions = functions.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(serve(&functions, request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { url, task })
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn invoke(api: &RuntimeApi, event: &Value) -> Option<Value> {
    let id = api.invoke(event.clone());
    match api.outcome(&id, INTEGRATION_TIMEOUT).await {
        Some((Outcome::Response(value), _)) => Some(value),
        _ => None,
    }
}

async fn serve(functions: &Functions, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let Some(path) = parts.uri.path().strip_prefix(&format!("/{STAGE}")) else {
        return reply(
            StatusCode::FORBIDDEN,
            &json!({"message": "Missing Authentication Token"}),
        );
    };
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let mut headers = Map::new();
    let mut multi = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), json!(value));
        if let Some(values) = multi
            .entry(name.as_str().to_owned())
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            values.push(json!(value));
        }
    }
    let (query, multi_query) = query_maps(parts.uri.query());
    let method = parts.method.as_str().to_owned();
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut context = json!({
        "resourcePath": "/{proxy+}",
        "httpMethod": method,
        "path": format!("/{STAGE}{path}"),
        "stage": STAGE,
        "requestId": request_id,
        "protocol": "HTTP/1.1",
        "identity": {"sourceIp": "127.0.0.1"},
        "accountId": "123456789012",
        "apiId": "local",
    });
    if let Some(authorizer) = &functions.authorizer {
        let event = json!({
            "type": "REQUEST",
            "methodArn": format!("arn:aws:execute-api:us-east-1:123456789012:local/{STAGE}/{method}{path}"),
            "resource": "/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": multi,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "requestContext": context,
        });
        let Some(policy) = invoke(authorizer, &event).await else {
            // The authorizer answered with an error ("Unauthorized") or not at all.
            return reply(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "Unauthorized"}),
            );
        };
        let allowed = policy["policyDocument"]["Statement"]
            .as_array()
            .is_some_and(|s| s.iter().all(|st| st["Effect"] == "Allow") && !s.is_empty());
        if !allowed {
            return reply(
                StatusCode::FORBIDDEN,
                &json!({"Message": "User is not authorized to access this resource with an explicit deny"}),
            );
        }
        let mut authorizer_context = policy["context"].as_object().cloned().unwrap_or_default();
        authorizer_context.insert("principalId".into(), policy["principalId"].clone());
        context["authorizer"] = Value::Object(authorizer_context);
    }
    let (text, base64) = match std::str::from_utf8(&body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&body),
            true,
        ),
    };
    let event = json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "stageVariables": null,
        "requestContext": context,
        "body": if body.is_empty() { Value::Null } else { json!(text) },
        "isBase64Encoded": base64,
    });
    let Some(answer) = invoke(&functions.handler, &event).await else {
        return reply(
            StatusCode::BAD_GATEWAY,
            &json!({"message": "Internal server error"}),
        );
    };
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match (answer["body"].as_str(), answer["isBase64Encoded"].as_bool()) {
        (Some(text), Some(true)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default(),
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, _) => Vec::new(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let mut names = Vec::new();
    if let Some(multi) = answer["multiValueHeaders"].as_object() {
        for (name, values) in multi {
            for value in values.as_array().into_iter().flatten() {
                if let (Ok(name), Some(Ok(value))) = (
                    hyper::header::HeaderName::from_bytes(name.as_bytes()),
                    value.as_str().map(hyper::header::HeaderValue::from_str),
                ) {
                    names.push(name.clone());
                    response.headers_mut().append(name, value);
                }
            }
        }
    }
    if let Some(single) = answer["headers"].as_object() {
        for (name, value) in single {
            if let (Ok(name), Some(Ok(value))) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(hyper::header::HeaderValue::from_str),
            ) && !names.contains(&name)
            {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// The query as API Gateway's REST API passes it: the last value of each name, and all of them.
fn query_maps(query: Option<&str>) -> (Value, Value) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return (Value::Null, Value::Null);
    };
    let mut single = Map::new();
    let mut multi = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode(&s)
        };
        let (name, value) = (decode(name), decode(value));
        single.insert(name.clone(), json!(value));
        if let Some(values) = multi
            .entry(name)
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            values.push(json!(value));
        }
    }
    (Value::Object(single), Value::Object(multi))
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
