//! `ak-bench`: the figures of the performance budget, measured on this machine.
//! Run through `scripts/bench.sh`, which builds the release packages and starts Redis and moto.
//!
//! Prints a table and writes JSON: package sizes; cold start of each function binary against a
//! local Runtime API (spawn → first `next`), interleaved with the hello-world yardstick
//! (`benches/hello-world`) and as ratios to it, its RSS then, the first and warm invocations and
//! peak RSS; in-process chat overhead with a loopback model at 0, 10 and 100 turns of history;
//! rest_sync's added latency (answer stored → waiter answered) on Redis and DynamoDB; pipeline
//! throughput through `ak-local` with requests lost or duplicated; streaming: from the
//! model's first streamed piece to the client's first `delta`, and per piece; and the event logs
//! of the queue modes: writes per 2,000-token answer and the runner-write → follower-read delay;
//! and what tracing adds to the request handler's cold start and warm requests.

use ak_adapters::AwsConfig;
use ak_adapters::dynamodb::DynamoResponseStore;
use ak_adapters::redis::RedisResponseStore;
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, ToolRegistry};
use ak_core::config::{DynamoDbSettings, Settings};
use ak_core::ports::memory::MemorySessionStore;
use ak_core::ports::{
    AgentRunner, ResponseRecord, ResponseStore, SessionStore, Turn, now_epoch_secs,
};
use ak_core::secret::Secret;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{RuntimeApi, spawn_function};
use ak_tests::{
    create_queue, create_response_table, dynamodb_client, http_json, redis_settings, unique_name,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The yardstick: `benches/hello-world`, built with the same release profile.
const HELLO: &str = "hello-world";

/// The functions as `deploy.sh` builds them for a deployment on Redis: `-both` with Bedrock and
/// MCP tools in direct mode (`--no-default-features --features bedrock,mcp,redis`), `-lean`
/// using neither (`--features redis`), when `scripts/bench.sh` built them.
const VARIANTS: [&str; 5] = [
    "request-handler-both",
    "agent-runner-both",
    "request-handler-lean",
    "agent-runner-lean",
    "response-handler-lean",
];

/// Every binary measured in `dir`: the yardstick, the four functions, and the variants
/// present.
fn measured(dir: &Path) -> Vec<&'static str> {
    std::iter::once(HELLO)
        .chain(FUNCTIONS)
        .chain(
            VARIANTS
                .into_iter()
                .filter(|n| dir.join(n).join("bootstrap").is_file()),
        )
        .collect()
}

const FUNCTIONS: [&str; 4] = [
    "request-handler",
    "agent-runner",
    "response-handler",
    "authorizer",
];

/// Median, min and max of samples in milliseconds (or any unit).
fn stats(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
    json!({"median": round(median), "min": round(*s.first().unwrap_or(&0.0)), "max": round(*s.last().unwrap_or(&0.0)), "runs": s.len()})
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

struct Args {
    lambda_dir: PathBuf,
    out: PathBuf,
    runs: usize,
    /// Measure one section alone and print it (`streaming`, `eventlog`, `soak`, `tracing`,
    /// `functions`, `redis`).
    only: Option<String>,
    /// Requests of each soak run.
    soak_requests: usize,
    /// Which soaks run (`all`, `none`, `connections`, `kills`).
    soak_faults: String,
}

fn args() -> Args {
    let mut args = Args {
        lambda_dir: PathBuf::from("target/lambda"),
        out: PathBuf::from("target/bench/results.json"),
        runs: 10,
        only: None,
        soak_requests: 2000,
        soak_faults: "all".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--lambda-dir", Some(v)) => args.lambda_dir = v.into(),
            ("--out", Some(v)) => args.out = v.into(),
            ("--runs", Some(v)) => args.runs = v.parse().unwrap_or(10),
            ("--only", Some(v)) => args.only = Some(v),
            ("--soak-requests", Some(v)) => args.soak_requests = v.parse().unwrap_or(2000),
            ("--soak-faults", Some(v)) => args.soak_faults = v,
            _ => eprintln!("ak-bench: ignoring {flag}"),
        }
    }
    args
}

async fn packages(dir: &Path) -> Value {
    let mut out = serde_json::Map::new();
    for name in measured(dir) {
        let zip = std::fs::metadata(dir.join(name).join("bootstrap.zip"))
            .map(|m| m.len())
            .unwrap_or(0);
        let bin = std::fs::metadata(dir.join(name).join("bootstrap"))
            .map(|m| m.len())
            .unwrap_or(0);
        out.insert(name.into(), json!({"zip_bytes": zip, "binary_bytes": bin}));
    }
    Value::Object(out)
}

/// The environment each function needs to start, and an event to invoke it with.
async fn function_setup(name: &str) -> (Vec<(String, String)>, Value) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let redis = redis_settings(600);
    let store_env = vec![
        (
            "AK_EXECUTION__RESPONSE_STORE__TYPE".to_owned(),
            "redis".to_owned(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL".to_owned(),
            redis.url.expose().to_owned(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX".to_owned(),
            redis.prefix().to_owned(),
        ),
    ];
    match name {
        "request-handler" => (
            vec![
                ("AK_CONFIG_PATH_OVERRIDE".into(), config),
                ("AK_MODEL__PROVIDER".into(), "offline".into()),
            ],
            fixture("apigw_v1_post_chat.json"),
        ),
        "agent-runner" => {
            let mut urls = Vec::new();
            for _ in 0..2 {
                urls.push(create_queue("bench", None).await.unwrap_or_default());
            }
            let mut env = vec![
                ("AK_CONFIG_PATH_OVERRIDE".into(), config),
                ("AK_MODEL__PROVIDER".into(), "offline".into()),
                ("AK_EXECUTION__MODE".into(), "rest_async".into()),
                ("AK_EXECUTION__QUEUES__INPUT__URL".into(), urls[0].clone()),
                ("AK_EXECUTION__QUEUES__OUTPUT__URL".into(), urls[1].clone()),
            ];
            env.extend(store_env);
            (env, fixture("sqs_input_event.json"))
        }
        "response-handler" => (store_env, fixture("sqs_output_event.json")),
        _ => {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({"sub": "user-a", "exp": now_epoch_secs() + 3600}),
                &jsonwebtoken::EncodingKey::from_secret(b"bench-secret-0123456789"),
            )
            .unwrap_or_default();
            let mut event = fixture("authorizer_token_event.json");
            event["authorizationToken"] = json!(format!("Bearer {token}"));
            (
                vec![(
                    "AK_AUTH__JWT__SECRET".into(),
                    "bench-secret-0123456789".into(),
                )],
                event,
            )
        }
    }
}

/// Gives each invocation a fresh request id so claims and answers do not collide.
fn fresh(event: &Value) -> Value {
    let mut e = event.clone();
    if let Some(records) = e.get_mut("Records").and_then(Value::as_array_mut) {
        for r in records {
            r["messageAttributes"]["request_id"]["stringValue"] = json!(unique_name("req"));
        }
    }
    e
}

/// One function's samples over the cold-start runs.
#[derive(Default)]
struct ColdSamples {
    cold: Vec<f64>,
    rss_at_next: Vec<f64>,
    first: Vec<f64>,
    warm: Vec<f64>,
    peak: Vec<f64>,
}

/// Cold starts of every function and of the hello-world yardstick, interleaved run by run
/// (hello-world, then each function, `runs` times), so a noisy machine slows them alike and
/// the ratios hold: each function's figures and its medians over hello-world's.
async fn cold_starts(dir: &Path, runs: usize) -> Value {
    let names = measured(dir);
    let mut setups = Vec::new();
    for name in &names {
        let (env, event) = if *name == HELLO {
            (Vec::new(), json!({}))
        } else {
            function_setup(name.trim_end_matches("-lean").trim_end_matches("-both")).await
        };
        setups.push((env, event));
    }
    let mut samples: Vec<ColdSamples> = names.iter().map(|_| ColdSamples::default()).collect();
    for _ in 0..runs {
        for (i, name) in names.iter().enumerate() {
            let binary =
                std::fs::canonicalize(dir.join(name).join("bootstrap")).unwrap_or_default();
            let (env, event) = &setups[i];
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let s = &mut samples[i];
            let Ok(api) = RuntimeApi::start().await else {
                continue;
            };
            let started = Instant::now();
            let Ok(mut child) = spawn_function(&binary, &api, &env) else {
                continue;
            };
            let Some(at) = api.first_next(Duration::from_secs(10)).await else {
                let _ = child.kill();
                eprintln!("{name}: no first next; init error {:?}", api.init_error());
                continue;
            };
            s.cold.push(ms(at.duration_since(started)));
            s.rss_at_next
                .extend(rss_kib(child.id(), "VmRSS:").map(|k| k / 1024.0));
            let sent = Instant::now();
            let id = api.invoke(fresh(event));
            if let Some((_, done)) = api.outcome(&id, Duration::from_secs(10)).await {
                s.first.push(ms(done.duration_since(sent)));
            }
            for _ in 0..20 {
                let sent = Instant::now();
                let id = api.invoke(fresh(event));
                if let Some((_, done)) = api.outcome(&id, Duration::from_secs(10)).await {
                    s.warm.push(ms(done.duration_since(sent)));
                }
            }
            s.peak
                .extend(rss_kib(child.id(), "VmHWM:").map(|k| k / 1024.0));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let median = |v: &Value| v["median"].as_f64().unwrap_or(0.0);
    let mut out = serde_json::Map::new();
    let mut hello = (0.0, 0.0);
    for (name, s) in names.iter().zip(samples) {
        let mut figures = json!({
            "cold_start_ms": stats(&s.cold),
            "rss_at_first_next_mib": stats(&s.rss_at_next),
            "first_invocation_ms": stats(&s.first),
            "warm_invocation_ms": stats(&s.warm),
            "peak_rss_mib": stats(&s.peak),
        });
        if *name == HELLO {
            hello = (
                median(&figures["cold_start_ms"]),
                median(&figures["rss_at_first_next_mib"]),
            );
        } else if hello.0 > 0.0 && hello.1 > 0.0 {
            figures["cold_start_x_hello"] =
                json!(round(median(&figures["cold_start_ms"]) / hello.0));
            figures["rss_x_hello"] =
                json!(round(median(&figures["rss_at_first_next_mib"]) / hello.1));
        }
        out.insert((*name).into(), figures);
    }
    Value::Object(out)
}

/// What tracing costs: the request handler (release build, direct mode, the offline model, so
/// nothing but the function is timed) with tracing off and on (exporting every invocation's
/// spans to the OTLP receiver of the tests on loopback before its reply), interleaved run by
/// run: cold start (spawn → first `next`) and warm invocations (invoke → reply at the Runtime
/// API, the export included), with the difference of the medians.
async fn tracing_cost(dir: &Path, runs: usize) -> Value {
    let receiver = match ak_tests::otlp::OtlpReceiver::start(0).await {
        Ok(r) => r,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let binary =
        std::fs::canonicalize(dir.join("request-handler").join("bootstrap")).unwrap_or_default();
    let (env, event) = function_setup("request-handler").await;
    let mut traced = env.clone();
    traced.push((
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
        receiver.endpoint.clone(),
    ));
    let mut cold = [Vec::new(), Vec::new()];
    let mut warm = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, env) in [&env, &traced].into_iter().enumerate() {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let Ok(api) = RuntimeApi::start().await else {
                continue;
            };
            let started = Instant::now();
            let Ok(mut child) = spawn_function(&binary, &api, &env) else {
                continue;
            };
            if let Some(at) = api.first_next(Duration::from_secs(10)).await {
                cold[i].push(ms(at.duration_since(started)));
            }
            for n in 0..51 {
                let sent = Instant::now();
                let id = api.invoke(event.clone());
                if let Some((_, done)) = api.outcome(&id, Duration::from_secs(10)).await
                    && n > 0
                {
                    warm[i].push(ms(done.duration_since(sent)));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let spans = receiver.count().await;
    let median = |v: &[f64]| stats(v)["median"].as_f64().unwrap_or(0.0);
    json!({
        "cold_start_off_ms": stats(&cold[0]),
        "cold_start_on_ms": stats(&cold[1]),
        "warm_off_ms": stats(&warm[0]),
        "warm_on_ms": stats(&warm[1]),
        "added_per_request_ms": round(median(&warm[1]) - median(&warm[0])),
        "added_cold_start_ms": round(median(&cold[1]) - median(&cold[0])),
        "spans_received": spans,
        "spans_per_request": round(spans as f64 / warm[1].len().max(1) as f64),
    })
}

/// Streaming through the request handler's API in direct mode: a loopback model streams 50
/// pieces 5 ms apart; for each piece, the time from the model sending it to the client getting
/// its `delta` event (the first of them is the time to first byte the runtime adds).
async fn streaming_overhead(runs: usize) -> Value {
    use futures_util::StreamExt;
    let (mut first, mut each) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let text = "word ".repeat(50);
        let model = ScriptedModel::start(vec![Reply::text_stream(
            &text,
            50,
            Duration::from_millis(5),
        )])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let provider = OpenAiProvider::new(OpenAiConfig {
            base_url: model.base_url.clone(),
            api_key: Some(Secret::new("sk-bench")),
            timeout: Duration::from_secs(5),
            max_retries: 0,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let runtime: Arc<dyn AgentRunner> = Arc::new(
            AgentRuntime::from_settings(
                &Settings::default(),
                &ToolRegistry::new(),
                Arc::new(provider),
                Arc::new(MemorySessionStore::default()),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let api = Api::new(
            Router::builder(RoutePaths::default())
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            ChatService::new(Execution::Direct(runtime), None, vec![]),
            1 << 20,
        );
        let mut event = fixture("apigw_v1_post_chat.json");
        event["body"] = json!(json!({"prompt": "hello", "stream": true}).to_string());
        let request =
            match ak_http::event::decode(&event, &ak_http::event::DecodeOptions::default()) {
                ak_http::event::Incoming::Request { request, .. } => *request,
                _ => panic!("the fixture is a request"),
            };
        let ak_http::api::Reply::Events(mut body) = api.respond(request).await else {
            panic!("not a stream");
        };
        let mut deltas = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            if chunk.starts_with(b"id:") && String::from_utf8_lossy(&chunk).contains("event: delta")
            {
                deltas.push(Instant::now());
            }
        }
        // The model's pieces: a role chunk, then the 50 text pieces.
        let sent = model.sent_chunks();
        for (k, got) in deltas.iter().enumerate() {
            if let Some(sent) = sent.get(k + 1) {
                let delay = ms(got.saturating_duration_since(*sent));
                if k == 0 {
                    first.push(delay);
                }
                each.push(delay);
            }
        }
    }
    json!({"time_to_first_delta_ms": stats(&first), "per_chunk_ms": stats(&each)})
}

/// Time per chat request through the request handler's API in direct mode, with the model on
/// loopback answering at once, for `turns` earlier turns in the session.
async fn chat_overhead(model: &ScriptedModel, turns: usize, iterations: usize) -> (Value, Value) {
    let mut settings = Settings::default();
    settings.agents.history_window = 1000;
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new("sk-bench")),
        timeout: Duration::from_secs(5),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let sessions = Arc::new(MemorySessionStore::default());
    let runtime: Arc<dyn AgentRunner> = Arc::new(
        AgentRuntime::from_settings(
            &settings,
            &ToolRegistry::new(),
            Arc::new(provider),
            sessions.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let api = Api::new(
        Router::builder(RoutePaths::default())
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        ChatService::new(Execution::Direct(runtime), None, vec![]),
        1 << 20,
    );
    let history: Vec<Turn> = (0..turns)
        .map(|i| Turn {
            request_id: format!("bench-request-{i}"),
            fingerprint: String::new(),
            user_id: None,
            items: vec![
                json!({"role": "user", "content": format!("question number {i} about something of moderate length")}),
                json!({"role": "assistant", "content": format!("answer number {i}, also of a moderate length to be realistic"), "agent": "assistant"}),
            ],
            created_at: 0,
        })
        .collect();
    let mut handler = Vec::new();
    let mut model_only = Vec::new();
    for i in 0..iterations {
        let session = format!("bench-{turns}-{i}");
        for (seq, turn) in history.iter().enumerate() {
            let _ = sessions.append(&session, seq as u64, turn).await;
        }
        let mut event = fixture("apigw_v1_post_chat.json");
        event["body"] = json!(json!({"prompt": "hello", "session_id": session}).to_string());
        let started = Instant::now();
        let response = api.handle_event(event).await;
        handler.push(ms(started.elapsed()));
        assert_eq!(response["statusCode"], 200);
        // The same model call alone, to subtract what the loopback model costs.
        let body = json!({"model": "m", "messages": history.iter().flat_map(|t| &t.items).collect::<Vec<_>>()});
        let started = Instant::now();
        let _ = http_json(&model.base_url, "POST", "/chat/completions", Some(&body)).await;
        model_only.push(ms(started.elapsed()));
    }
    (stats(&handler), stats(&model_only))
}

async fn sync_latency(store: Arc<dyn ResponseStore>, runs: usize) -> Value {
    let mut lags = Vec::new();
    for _ in 0..runs {
        let record = ResponseRecord {
            request_id: unique_name("req"),
            session_id: "s".into(),
            user_id: None,
            status_code: 200,
            attempt: 0,
            body: json!({"result": "x"}),
            created_at: now_epoch_secs(),
        };
        let waiter = {
            let store = store.clone();
            let id = record.request_id.clone();
            tokio::spawn(async move {
                let _ = store.wait_for(&id, Duration::from_secs(10)).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = store.put(&record).await;
        let stored = Instant::now();
        if let Ok(answered) = waiter.await {
            lags.push(ms(answered.saturating_duration_since(stored)));
        }
    }
    stats(&lags)
}

/// The event log of the queue modes on one store: how many writes a 2,000-token answer costs
/// (tokens of 4 bytes, all at once and at 500 tokens/s), and the delay from the start of the
/// runner's write to a waiting follower's read.
async fn event_log(store: Arc<dyn ResponseStore>) -> Value {
    use ak_core::events::RunEvent;
    use ak_core::ports::LoggedEvent;
    use ak_runtime::exec::eventlog::LogWriter;
    let mut writes = serde_json::Map::new();
    for (label, pause) in [
        ("instant", Duration::ZERO),
        ("500_tokens_per_s", Duration::from_millis(2)),
    ] {
        let id = unique_name("log");
        let writer = LogWriter::start(store.clone(), &id, 0, "bench");
        writer.sender().send(RunEvent::Agent {
            agent: "bench".into(),
        });
        for _ in 0..2000 {
            writer.sender().send(RunEvent::Delta {
                text: "tok ".into(),
            });
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        let stats = writer.finish(RunEvent::Done(json!({"result": "x"}))).await;
        writes.insert(
            label.into(),
            json!({"writes": stats.writes, "events": stats.events, "gave_up": stats.gave_up}),
        );
    }
    let mut delays = Vec::new();
    let id = unique_name("lag");
    for seq in 1..=40u64 {
        let follower = {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let _ = store
                    .events_after(&id, seq - 1, Duration::from_secs(10))
                    .await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(120)).await;
        let written = Instant::now();
        let event = LoggedEvent {
            seq,
            event: RunEvent::Delta {
                text: "tok ".into(),
            },
        };
        if store.append_events(&id, &[event]).await.is_err() {
            continue;
        }
        if let Ok(read) = follower.await {
            delays.push(ms(read.saturating_duration_since(written)));
        }
    }
    json!({"writes_per_2000_token_answer": writes, "write_to_follower_ms": stats(&delays)})
}

async fn throughput(
    label: &str,
    env: Vec<(String, String)>,
    requests: usize,
    clients: usize,
) -> Value {
    let model = ScriptedModel::constant(Reply::Text("ok".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0);
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ak-local");
    let mut command = std::process::Command::new(&binary);
    command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("OPENAI_BASE_URL", &model.base_url)
        .env("OPENAI_API_KEY", "sk-bench")
        .env("AK_LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in std::env::vars() {
        if k.starts_with("AWS_") || k == "PATH" {
            command.env(k, v);
        }
    }
    command.envs(env);
    let Ok(mut child) = command.spawn() else {
        return json!({"error": format!("cannot start {}", binary.display())});
    };
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (base, next) = (base.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= requests {
                    return answered;
                }
                let id = format!("load-{i}");
                let body =
                    json!({"request_id": id, "body": {"prompt": "hello", "agent": "history"}});
                if let Ok((200, reply)) =
                    http_json(&base, "POST", "/api/v1/chat", Some(&body)).await
                {
                    answered.push(reply["request_id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let unique: std::collections::HashSet<&String> = answered.iter().collect();
    json!({
        "backend": label,
        "requests": requests,
        "clients": clients,
        "answered": answered.len(),
        "lost": requests - unique.len(),
        "duplicated_model_calls": model.calls().saturating_sub(requests),
        "requests_per_second": round(requests as f64 / elapsed.as_secs_f64()),
        "seconds": round(elapsed.as_secs_f64()),
    })
}

/// A response store on Redis and one on a fresh DynamoDB table (moto).
async fn bench_stores() -> anyhow::Result<(Arc<dyn ResponseStore>, Arc<dyn ResponseStore>)> {
    let redis: Arc<dyn ResponseStore> = Arc::new(RedisResponseStore::new(&redis_settings(600))?);
    let table = unique_name("bench");
    create_response_table(&dynamodb_client().await, &table).await?;
    let dynamo: Arc<dyn ResponseStore> = Arc::new(DynamoResponseStore::new(
        aws_sdk_dynamodb::Client::new(AwsConfig::default().get().await),
        &DynamoDbSettings {
            table_name: Some(table),
            ttl: 600,
        },
    )?);
    Ok((redis, dynamo))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    if args.only.as_deref() == Some("streaming") {
        let streaming = streaming_overhead(20).await;
        println!("{}", serde_json::to_string_pretty(&streaming)?);
        return Ok(());
    }
    if args.only.as_deref() == Some("soak") {
        let soak = soak(&args).await?;
        println!("{}", serde_json::to_string_pretty(&soak)?);
        return Ok(());
    }
    if args.only.as_deref() == Some("redis") {
        let stores: Vec<(&str, Arc<dyn ResponseStore>)> = vec![
            (
                "redis_ms",
                Arc::new(RedisResponseStore::new(&redis_settings(600))?),
            ),
            (
                "redis_tls_ms",
                Arc::new(RedisResponseStore::new(&ak_tests::redis_tls_settings(600))?),
            ),
            (
                "redis_cluster_mode_ms",
                Arc::new(RedisResponseStore::new(&ak_tests::redis_cluster_settings(
                    600,
                ))?),
            ),
        ];
        let mut out = serde_json::Map::new();
        for (name, store) in stores {
            out.insert(name.to_owned(), sync_latency(store, 30).await);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if args.only.as_deref() == Some("tracing") {
        let cost = tracing_cost(&args.lambda_dir, args.runs).await;
        println!("{}", serde_json::to_string_pretty(&cost)?);
        return Ok(());
    }
    if args.only.as_deref() == Some("eventlog") {
        let (redis, dynamo) = bench_stores().await?;
        let logs = json!({"redis": event_log(redis).await, "dynamodb": event_log(dynamo).await});
        println!("{}", serde_json::to_string_pretty(&logs)?);
        return Ok(());
    }
    eprintln!("== package sizes");
    let packages = packages(&args.lambda_dir).await;
    eprintln!("== cold starts ({} runs per function)", args.runs);
    let cold = cold_starts(&args.lambda_dir, args.runs).await;
    if args.only.as_deref() == Some("functions") {
        let results = json!({"packages": packages, "functions": cold});
        print_functions(&results);
        return Ok(());
    }

    eprintln!("== tracing off and on (request handler, direct mode, offline model)");
    let tracing = tracing_cost(&args.lambda_dir, args.runs).await;

    eprintln!("== chat overhead");
    let model = ScriptedModel::constant(Reply::Text("ok".into())).await?;
    let mut overhead = serde_json::Map::new();
    for turns in [0usize, 10, 100] {
        let (handler, model_only) = chat_overhead(&model, turns, 200).await;
        let added = handler["median"].as_f64().unwrap_or(0.0)
            - model_only["median"].as_f64().unwrap_or(0.0);
        overhead.insert(format!("{turns}_turns"), json!({"request_ms": handler, "model_call_alone_ms": model_only, "overhead_ms": round(added.max(0.0))}));
    }

    eprintln!("== streaming: model piece → client delta");
    let streaming = streaming_overhead(20).await;

    eprintln!("== rest_sync latency (stored → answered)");
    let (redis, dynamo) = bench_stores().await?;
    let tls: Arc<dyn ResponseStore> =
        Arc::new(RedisResponseStore::new(&ak_tests::redis_tls_settings(600))?);
    let cluster_mode: Arc<dyn ResponseStore> = Arc::new(RedisResponseStore::new(
        &ak_tests::redis_cluster_settings(600),
    )?);
    let latency = json!({
        "redis_ms": sync_latency(redis.clone(), 30).await,
        "redis_tls_ms": sync_latency(tls, 30).await,
        "redis_cluster_mode_ms": sync_latency(cluster_mode, 30).await,
        "dynamodb_ms": sync_latency(dynamo.clone(), 30).await,
    });

    eprintln!("== event logs (writes per answer, runner write → follower read)");
    let logs = json!({"redis": event_log(redis).await, "dynamodb": event_log(dynamo).await});

    eprintln!("== pipeline throughput through ak-local (rest_sync)");
    let memory_env = vec![
        ("AK_EXECUTION__MODE".into(), "rest_sync".into()),
        (
            "AK_EXECUTION__QUEUES__INPUT__URL".into(),
            "memory://input".into(),
        ),
        (
            "AK_EXECUTION__QUEUES__OUTPUT__URL".into(),
            "memory://output".into(),
        ),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE".into(), "memory".into()),
    ];
    let mut urls = Vec::new();
    for _ in 0..2 {
        urls.push(create_queue("tput", None).await?);
    }
    let redis = redis_settings(600);
    let real_env = vec![
        ("AK_EXECUTION__MODE".into(), "rest_sync".into()),
        ("AK_EXECUTION__QUEUES__INPUT__URL".into(), urls[0].clone()),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL".into(), urls[1].clone()),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE".into(), "redis".into()),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL".into(),
            redis.url.expose().to_owned(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX".into(),
            redis.prefix().to_owned(),
        ),
    ];
    let tput = json!([
        throughput("memory", memory_env, 2000, 32).await,
        throughput("moto SQS + Redis", real_env, 300, 16).await,
    ]);

    eprintln!(
        "== soak under faults ({} requests, rest_async over moto + Redis)",
        args.soak_requests
    );
    let soak = soak(&args).await?;

    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "soak": soak,
        "packages": packages,
        "functions": cold,
        "chat_overhead": overhead,
        "tracing": tracing,
        "streaming": streaming,
        "rest_sync_latency": latency,
        "event_log": logs,
        "throughput": tput,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    print_table(&results);
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

/// The soak without faults, with connection faults and with runner kills; the latency a fault
/// adds is the difference of the p99s.
async fn soak(args: &Args) -> anyhow::Result<Value> {
    use ak_tests::soak::{Faults, run};
    match args.soak_faults.as_str() {
        "connections" => {
            return run(&args.lambda_dir, args.soak_requests, Faults::Connections).await;
        }
        "kills" => return run(&args.lambda_dir, args.soak_requests, Faults::Kills).await,
        "none" => return run(&args.lambda_dir, args.soak_requests, Faults::None).await,
        _ => {}
    }
    let calm = run(&args.lambda_dir, args.soak_requests, Faults::None).await?;
    let connections = run(&args.lambda_dir, args.soak_requests, Faults::Connections).await?;
    let kills = run(&args.lambda_dir, args.soak_requests, Faults::Kills).await?;
    let p99 = |v: &Value| v["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "without_faults": calm,
        "connection_faults": connections,
        "runner_kills": kills,
        "p99_added_by_connection_faults_ms": round(p99(&connections) - p99(&calm)),
        "p99_added_by_runner_kills_ms": round(p99(&kills) - p99(&calm)),
    }))
}

fn print_table(r: &Value) {
    print_functions(r);
    print_the_rest(r);
}

/// The per-function table: packages, cold starts and memory, with the hello-world ratios.
fn print_functions(r: &Value) {
    let f = |v: &Value| format!("{} ({}–{})", v["median"], v["min"], v["max"]);
    println!(
        "\n| function | zip | binary | cold start ms | × hello | RSS at first next MiB | × hello | first invocation ms | warm invocation ms | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let names: Vec<String> = r["functions"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let order = |n: &String| {
        std::iter::once(HELLO)
            .chain(FUNCTIONS)
            .chain(VARIANTS)
            .position(|k| k == n)
    };
    let mut names = names;
    names.sort_by_key(order);
    for name in &names {
        let name = name.as_str();
        let p = &r["packages"][name];
        let c = &r["functions"][name];
        let ratio = |v: &Value| v.as_f64().map_or("1.0".to_owned(), |x| format!("{x}"));
        println!(
            "| {name} | {:.2} MB | {:.2} MB | {} | {} | {} | {} | {} | {} | {} |",
            p["zip_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            p["binary_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            f(&c["cold_start_ms"]),
            ratio(&c["cold_start_x_hello"]),
            f(&c["rss_at_first_next_mib"]),
            ratio(&c["rss_x_hello"]),
            f(&c["first_invocation_ms"]),
            f(&c["warm_invocation_ms"]),
            f(&c["peak_rss_mib"]),
        );
    }
}

/// The tables after the per-function one.
fn print_the_rest(r: &Value) {
    let f = |v: &Value| format!("{} ({}–{})", v["median"], v["min"], v["max"]);
    println!(
        "\n| chat request, direct mode, loopback model | request ms | model call alone ms | overhead ms |"
    );
    println!("|---|---|---|---|");
    for turns in ["0_turns", "10_turns", "100_turns"] {
        let o = &r["chat_overhead"][turns];
        println!(
            "| {} | {} | {} | {} |",
            turns.replace('_', " "),
            f(&o["request_ms"]),
            f(&o["model_call_alone_ms"]),
            o["overhead_ms"]
        );
    }
    let t = &r["tracing"];
    println!(
        "\n| tracing (request handler, direct mode, offline model) | off | on (OTLP export before each reply) | added |"
    );
    println!("|---|---|---|---|");
    println!(
        "| cold start ms | {} | {} | {} |",
        f(&t["cold_start_off_ms"]),
        f(&t["cold_start_on_ms"]),
        t["added_cold_start_ms"]
    );
    println!(
        "| warm request ms ({} spans each) | {} | {} | {} |",
        t["spans_per_request"],
        f(&t["warm_off_ms"]),
        f(&t["warm_on_ms"]),
        t["added_per_request_ms"]
    );
    println!("\n| streaming (direct mode, loopback model, 50 pieces 5 ms apart) | ms |");
    println!("|---|---|");
    println!(
        "| model's first piece → client's first delta (time to first byte added) | {} |",
        f(&r["streaming"]["time_to_first_delta_ms"])
    );
    println!(
        "| model's piece → client's delta, every piece | {} |",
        f(&r["streaming"]["per_chunk_ms"])
    );
    println!("\n| rest_sync: answer stored → waiter answered | ms |");
    println!("|---|---|");
    println!("| Redis | {} |", f(&r["rest_sync_latency"]["redis_ms"]));
    println!(
        "| Redis over TLS | {} |",
        f(&r["rest_sync_latency"]["redis_tls_ms"])
    );
    println!(
        "| Redis cluster-mode node (as ElastiCache Serverless: no PSUBSCRIBE) | {} |",
        f(&r["rest_sync_latency"]["redis_cluster_mode_ms"])
    );
    println!(
        "| DynamoDB (moto) | {} |",
        f(&r["rest_sync_latency"]["dynamodb_ms"])
    );
    println!(
        "\n| event log | writes, 2,000-token answer at once | writes, at 500 tokens/s | runner write → follower read ms |"
    );
    println!("|---|---|---|---|");
    for (label, key) in [("Redis", "redis"), ("DynamoDB (moto)", "dynamodb")] {
        let l = &r["event_log"][key];
        println!(
            "| {label} | {} | {} | {} |",
            l["writes_per_2000_token_answer"]["instant"]["writes"],
            l["writes_per_2000_token_answer"]["500_tokens_per_s"]["writes"],
            f(&l["write_to_follower_ms"])
        );
    }
    println!(
        "\n| pipeline through ak-local (rest_sync) | requests | clients | req/s | lost | duplicated model calls |"
    );
    println!("|---|---|---|---|---|---|");
    for t in r["throughput"].as_array().into_iter().flatten() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            t["backend"].as_str().unwrap_or("?"),
            t["requests"],
            t["clients"],
            t["requests_per_second"],
            t["lost"],
            t["duplicated_model_calls"]
        );
    }
    println!(
        "\n| soak, rest_async over moto + Redis | requests | faults injected | lost | not their own answer | model calls beyond one per request | DLQ | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for key in ["without_faults", "connection_faults", "runner_kills"] {
        let s = &r["soak"][key];
        let injected: u64 = s["injected"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.replace('_', " "),
            s["requests"],
            injected,
            s["lost"],
            s["not_their_own_answer"],
            s["model_calls_beyond_one_per_request"],
            s["dead_letter_queue"],
            s["latency_ms"]["p50"],
            s["latency_ms"]["p99"]
        );
    }
    println!(
        "p99 latency added: {} ms by connection faults, {} ms by runner kills",
        r["soak"]["p99_added_by_connection_faults_ms"], r["soak"]["p99_added_by_runner_kills_ms"]
    );
}
