//! A soak of the queue modes under faults (`scripts/bench.sh`): requests through moto SQS to the
//! real agent-runner and response-handler binaries (each under a local Runtime API, fed by an
//! event source mapping), Redis behind a [`TcpFaultProxy`], and while they run, random faults:
//! every connection reset, reset on next use, or silently dropped; a runner frozen and thawed;
//! a runner killed (`SIGKILL`) and started again. Counts what a user would notice: requests
//! never answered, answers that are not their own, model calls beyond one per request, messages
//! in the dead-letter queue — and the latency each request saw.

use crate::event_source::{EventSource, depth, queue_with_dlq};
use crate::faults::{TcpFaultProxy, freeze, kill, thaw};
use crate::model_server::{Reply, ScriptedModel};
use crate::runtime_api::{RuntimeApi, spawn_function_with_log};
use ak_adapters::redis::RedisResponseStore;
use ak_adapters::sqs::SqsQueue;
use ak_core::ports::{Queue, QueueMessage, ResponseStore};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds of the runner's timeout and of the input queue's visibility timeout.
const TIMEOUT: u64 = 10;

struct Process(Option<Child>);

impl Process {
    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            thaw(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A deterministic pseudo-random sequence (xorshift), so two soaks inject the same faults.
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[index.min(sorted.len() - 1)] * 10.0).round() / 10.0
}

/// Which faults a soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// None: the baseline.
    None,
    /// Connection faults: Redis connections reset, reset on next use, black-holed; a runner
    /// frozen while its connections reset.
    Connections,
    /// Runners killed (`SIGKILL`) and started again.
    Kills,
}

/// One soak: `requests` requests with `faults`; `binaries` holds `agent-runner/bootstrap` and
/// `response-handler/bootstrap` (the release packages).
pub async fn run(binaries: &Path, requests: usize, faults: Faults) -> anyhow::Result<Value> {
    // Absolute: each function runs in a working directory of its own.
    let binaries = binaries.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (build the packages first: scripts/bench.sh)",
            binaries.display()
        )
    })?;
    let binary = |name: &str| -> PathBuf { binaries.join(name).join("bootstrap") };
    let (input_url, dlq_url) = queue_with_dlq("soak", TIMEOUT as u32, 4).await?;
    let output_url = crate::create_queue("soak-out", Some(TIMEOUT as u32)).await?;
    let model = ScriptedModel::constant(Reply::Echo(Duration::from_millis(20))).await?;
    let url = crate::redis_url();
    let proxy =
        TcpFaultProxy::start(url.trim_start_matches("redis://").trim_end_matches('/')).await?;
    let settings = crate::redis_settings(3600);
    let prefix = settings.prefix().to_owned();
    let through = format!("redis://{}", proxy.addr);
    let runner_env: Vec<(&str, String)> = vec![
        ("AK_AGENTS__DEFAULT", "assistant".into()),
        ("AK_MODEL__PROVIDER", "openai".into()),
        ("OPENAI_API_KEY", "sk-soak".into()),
        ("OPENAI_BASE_URL", model.base_url.clone()),
        (
            "AK_LOG__LEVEL",
            std::env::var("SOAK_LOG").unwrap_or_else(|_| "warn".into()),
        ),
        ("AK_EXECUTION__MODE", "rest_async".into()),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url.clone()),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", output_url.clone()),
        ("AK_EXECUTION__QUEUES__INPUT__MAX_RECEIVE_COUNT", "3".into()),
        (
            "AK_EXECUTION__QUEUES__INPUT__VISIBILITY_TIMEOUT",
            TIMEOUT.to_string(),
        ),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis".into()),
        ("AK_EXECUTION__RESPONSE_STORE__REDIS__URL", through),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
            prefix.clone(),
        ),
        ("AK_SESSION__TYPE", "redis".into()),
        ("AK_SESSION__REDIS__URL", format!("redis://{}", proxy.addr)),
        ("AK_SESSION__REDIS__PREFIX", format!("{prefix}sessions:")),
    ];
    let env = |pairs: &[(&'static str, String)]| -> Vec<(&'static str, String)> { pairs.to_vec() };
    // The functions' logs go to files, not into the report.
    let logs = std::env::temp_dir().join(crate::unique_name("soak-logs"));
    std::fs::create_dir_all(&logs)?;
    let spawn = |api: &RuntimeApi, name: &str, pairs: &[(&'static str, String)]| {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let log = logs.join(format!("{name}-{}.log", crate::unique_name("p")));
        spawn_function_with_log(&binary(name), api, &borrowed, Some(&log))
    };
    // Two runner instances and one response handler, each fed by its event source mapping.
    let sqs = crate::sqs_client().await;
    let input: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs.clone(), &input_url));
    let output: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs.clone(), &output_url));
    let mut runners = Vec::new();
    let mut sources = Vec::new();
    for _ in 0..2 {
        let api = Arc::new(RuntimeApi::start().await?);
        let child = spawn(&api, "agent-runner", &env(&runner_env))?;
        sources.push(EventSource::start(
            input.clone(),
            api.clone(),
            10,
            Duration::from_secs(TIMEOUT),
        ));
        runners.push((api, Process(Some(child))));
    }
    let responses_api = Arc::new(RuntimeApi::start().await?);
    let _responses = Process(Some(spawn(
        &responses_api,
        "response-handler",
        &env(&runner_env),
    )?));
    sources.push(EventSource::start(
        output.clone(),
        responses_api,
        10,
        Duration::from_secs(TIMEOUT),
    ));

    // The client: sends, then waits for each answer on a store that bypasses the proxy.
    let store: Arc<dyn ResponseStore> = Arc::new(RedisResponseStore::new(&settings)?);
    let started = Instant::now();
    let sender = {
        let input = input.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let mut waits = Vec::new();
            for i in 0..requests {
                let id = format!("soak-{i}-{}", crate::unique_name("r"));
                let message = QueueMessage {
                    request_id: id.clone(),
                    session_id: format!("session-{}", i % 50),
                    user_id: None,
                    status_code: None,
                    attempt: None,
                    body: json!({"prompt": format!("request {id}")}),
                };
                while input.send(&message).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let sent = Instant::now();
                let at = sent.duration_since(started);
                let store = store.clone();
                waits.push(tokio::spawn(async move {
                    let found = store.wait_for(&id, Duration::from_secs(180)).await;
                    (id, at, sent.elapsed(), found.ok().flatten())
                }));
                // About 60 requests a second: what moto keeps up with on two cores.
                tokio::time::sleep(Duration::from_millis(16)).await;
            }
            waits
        })
    };

    // The faults, while requests flow.
    let mut injected = serde_json::Map::new();
    let mut timeline = Vec::new();
    let mut count = |name: &str| {
        let n = injected.get(name).and_then(Value::as_u64).unwrap_or(0);
        injected.insert(name.to_owned(), json!(n + 1));
        timeline.push(json!([
            (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            name
        ]));
    };
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    while faults != Faults::None && !sender.is_finished() {
        // One fault every 8–12 s, so each one's cost shows in the latencies on its own.
        tokio::time::sleep(Duration::from_millis(8000 + dice.next(4000))).await;
        let pick = match faults {
            Faults::Kills => 4,
            _ => dice.next(4),
        };
        match pick {
            0 => {
                proxy.reset_all();
                count("redis_reset");
            }
            1 => {
                proxy.reset_on_next_use();
                count("redis_reset_on_next_use");
            }
            2 => {
                proxy.black_hole();
                count("redis_black_hole");
            }
            3 => {
                let (_, process) = &runners[dice.next(2) as usize];
                if let Some(pid) = process.pid() {
                    freeze(pid);
                    proxy.reset_on_next_use();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    thaw(pid);
                }
                count("runner_frozen_connections_reset");
            }
            _ => {
                let which = dice.next(2) as usize;
                let (api, process) = &mut runners[which];
                if let Some(pid) = process.pid() {
                    kill(pid);
                }
                *process = Process(None);
                api.abandon_in_flight();
                tokio::time::sleep(Duration::from_millis(200)).await;
                *process = Process(Some(spawn(api, "agent-runner", &env(&runner_env))?));
                count("runner_killed");
            }
        }
    }
    let waits = sender.await?;
    let mut latencies = Vec::new();
    let mut slowest = Vec::new();
    let (mut lost, mut not_their_own) = (0usize, 0usize);
    for wait in waits {
        let (id, at, latency, found) = wait.await?;
        slowest.push((latency.as_secs_f64(), at.as_secs_f64()));
        match found {
            None => lost += 1,
            Some(answer) => {
                let own = answer.status_code == 200
                    && answer.body["result"].as_str()
                        == Some(format!("echo: request {id}").as_str());
                if !own {
                    not_their_own += 1;
                }
                latencies.push(latency.as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    slowest.truncate(5);
    let answered = model.answered_prompts();
    let repeated: usize = answered
        .iter()
        .filter(|(prompt, _)| prompt.starts_with("request soak-"))
        .map(|(_, n)| n.saturating_sub(1))
        .sum();
    Ok(json!({
        "requests": requests,
        "faults": format!("{faults:?}").to_lowercase(),
        "injected": injected,
        "lost": lost,
        "not_their_own_answer": not_their_own,
        "model_calls_beyond_one_per_request": repeated,
        "dead_letter_queue": depth(&dlq_url).await.unwrap_or_default(),
        "latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "runner_invocations": sources.iter().map(EventSource::invocations).sum::<u64>(),
        "faults_at_s": timeline,
        "slowest_s": slowest.iter().map(|(latency, at)| json!({"sent_at": (at * 10.0).round() / 10.0, "latency": (latency * 10.0).round() / 10.0})).collect::<Vec<_>>(),
    }))
}
