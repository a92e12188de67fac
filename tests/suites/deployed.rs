//! The functions as `deploy.sh` builds them for the shipped settings: DynamoDB only — no Redis,
//! Bedrock, MCP or protocol surfaces — and without `aws-config`, so they take their AWS
//! configuration from the environment as on Lambda. The rest of the suite runs binaries built
//! with every feature (cargo unifies the workspace's features in one build); these are built
//! apart by `scripts/test.sh` into `target/deployed`, which it names in `TEST_DEPLOYED_BINARIES`.
//! Without that variable (a run of the suite by hand) each test says so and returns.

use ak_adapters::sqs::SqsQueue;
use ak_core::ports::Queue;
use ak_tests::event_source::EventSource;
use ak_tests::model_server::{Reply, ScriptedModel, triage_to_multiply};
use ak_tests::runtime_api::{Killed, Outcome, RuntimeApi, spawn_function};
use ak_tests::{sqs_client, unique_name};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The deployed build of `name`, or `None` (said on stderr) when scripts/test.sh did not build
/// them.
fn deployed(name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("TEST_DEPLOYED_BINARIES") else {
        eprintln!("TEST_DEPLOYED_BINARIES is not set (scripts/test.sh sets it): skipped");
        return None;
    };
    let path = PathBuf::from(dir).join(name);
    assert!(path.is_file(), "{} is not built", path.display());
    Some(path)
}

async fn start(binary: &PathBuf, env: &[(&str, &str)]) -> (Arc<RuntimeApi>, Killed) {
    let api = Arc::new(RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}")));
    let child = spawn_function(binary, &api, env).unwrap_or_else(|e| panic!("{e}"));
    (api, Killed(child))
}

fn post_chat(prompt: &str, session: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apigw_v1_post_chat.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    event["body"] = json!(json!({"prompt": prompt, "session_id": session}).to_string());
    event
}

#[tokio::test]
async fn the_deployed_functions_answer_through_sqs_and_dynamodb_with_lambdas_environment() {
    let (Some(handler), Some(runner), Some(responses)) = (
        deployed("request-handler"),
        deployed("agent-runner"),
        deployed("response-handler"),
    ) else {
        return;
    };
    let mut script = triage_to_multiply(6, 7);
    script.push(Reply::Text("you asked about 6 * 7".into()));
    let model = ScriptedModel::start(script)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let input_url = ak_tests::create_queue("deployed-in", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let output_url = ak_tests::create_queue("deployed-out", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let dynamodb = ak_tests::dynamodb_client().await;
    let (responses_table, sessions_table) = (unique_name("responses"), unique_name("sessions"));
    ak_tests::create_response_table(&dynamodb, &responses_table)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    ak_tests::create_session_table(&dynamodb, &sessions_table)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // What the Terraform module sets; AWS_REGION, the credentials and AWS_ENDPOINT_URL (moto)
    // come from this run's environment, as Lambda's would.
    let config = ak_tests::repo_config();
    let common = [
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_EXECUTION__MODE", "rest_sync"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url.as_str()),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", output_url.as_str()),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb"),
        (
            "AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME",
            responses_table.as_str(),
        ),
        ("AK_SESSION__TYPE", "dynamodb"),
        ("AK_SESSION__DYNAMODB__TABLE_NAME", sessions_table.as_str()),
    ];
    let mut runner_env = common.to_vec();
    runner_env.extend([
        ("AK_MODEL__PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-deployed"),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
    ]);
    let (handler_api, _handler) = start(&handler, &common).await;
    let (runner_api, _runner) = start(&runner, &runner_env).await;
    let (responses_api, _responses) = start(&responses, &common).await;
    let sqs = sqs_client().await;
    let input: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs.clone(), &input_url));
    let output: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs, &output_url));
    let _runs = EventSource::start(input, runner_api.clone(), 10, WAIT);
    let _stores = EventSource::start(output, responses_api.clone(), 10, WAIT);

    // Two turns of one session: the second sees the first, kept in DynamoDB.
    let session = unique_name("s");
    for (prompt, expected) in [
        ("what is 6 * 7", "6 * 7 = 42"),
        ("what did I ask?", "you asked about 6 * 7"),
    ] {
        let id = handler_api.invoke(post_chat(prompt, &session));
        let Some((Outcome::Response(answer), _)) = handler_api.outcome(&id, WAIT).await else {
            panic!(
                "no answer; init errors: {:?} {:?} {:?}",
                handler_api.init_error(),
                runner_api.init_error(),
                responses_api.init_error()
            );
        };
        assert_eq!(answer["statusCode"], 200, "{answer}");
        let body: Value =
            serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(body["result"], expected, "{body}");
    }
    let requests = model.requests();
    let last = requests.last().cloned().unwrap_or_default();
    assert!(
        last["messages"].to_string().contains("what is 6 * 7"),
        "the second turn's model call lacks the first: {last}"
    );
}

#[tokio::test]
async fn a_deployed_function_without_aws_credentials_refuses_to_start_naming_them() {
    let Some(handler) = deployed("request-handler") else {
        return;
    };
    let input_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/in";
    let env = [
        ("AK_EXECUTION__MODE", "rest_async"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb"),
        (
            "AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME",
            "ak-responses",
        ),
        // Outside Lambda (a container, the Runtime Interface Emulator) nobody sets these.
        ("AWS_REGION", ""),
        ("AWS_DEFAULT_REGION", ""),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
    ];
    let (api, mut child) = start(&handler, &env).await;
    let pid = child.0.id();
    let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.0.wait()))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(Result::ok);
    if status.is_none() {
        ak_tests::faults::kill(pid);
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "it must not start and answer every request with an error"
    );
    let error = api.init_error().map(|e| e.to_string()).unwrap_or_default();
    for named in [
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "SQS (execution.queues)",
        "DynamoDB (execution.response_store.type)",
    ] {
        assert!(error.contains(named), "{named}: {error}");
    }
}
