//! A backend that goes away gives a clear 503-class error within the timeout, never a hang.

use ak_adapters::redis::{RedisResponseStore, RedisSessionStore};
use ak_core::ApiError;
use ak_core::config::RedisSettings;
use ak_core::ports::{PortError, ResponseRecord, ResponseStore, SessionStore, now_epoch_secs};
use ak_core::secret::SecretUrl;
use ak_http::ErrorResponse;
use ak_tests::{PrivateRedis, unique_name};
use serde_json::json;
use std::time::{Duration, Instant};

/// The queue message of the request `answer` answers.
fn request_for(answer: &ResponseRecord) -> ak_core::ports::QueueMessage {
    ak_core::ports::QueueMessage {
        request_id: answer.request_id.clone(),
        session_id: answer.session_id.clone(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": "hi"}),
    }
}

/// A stored answer of a new request.
fn answer() -> ResponseRecord {
    ResponseRecord {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: 200,
        attempt: 0,
        body: json!({"result": "ok"}),
        created_at: now_epoch_secs(),
    }
}

#[tokio::test]
async fn redis_stopped_is_a_503_within_the_timeout() -> anyhow::Result<()> {
    let mut server = PrivateRedis::start().await?;
    let settings = RedisSettings {
        url: SecretUrl::new(&server.url),
        prefix: Some("ak:responses:".to_owned()),
        ttl: 60,
        ..RedisSettings::default()
    };
    let store = RedisResponseStore::new(&settings)?;
    let sessions = RedisSessionStore::new(&settings)?;
    let record = answer();
    store.put(&record).await?;
    assert!(store.get(&record.request_id).await?.is_some());

    server.stop();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = store.get(&record.request_id).await.err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "attempt {attempt} took {took:?}"
        );
        let Some(err) = err else {
            panic!("a stopped Redis answered")
        };
        assert!(matches!(err, PortError::Unavailable { .. }), "{err:?}");
        assert!(err.is_transient());
        let response = ApiError::from(err).to_response();
        assert_eq!(response.status.as_u16(), 503);
        assert_eq!(
            response.body["error"],
            "Redis is unavailable; try again shortly"
        );
    }
    let started = Instant::now();
    let waited = store
        .wait_for(&record.request_id, Duration::from_secs(20))
        .await;
    assert!(
        waited.is_err(),
        "wait_for reports the outage instead of waiting it out"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    let limits = ak_core::ports::HistoryLimits {
        max_items: 10,
        max_bytes: 10_000,
    };
    let loaded = sessions.load("s", limits).await;
    assert!(
        matches!(loaded, Err(PortError::Unavailable { .. })),
        "{loaded:?}"
    );
    Ok(())
}

#[tokio::test]
async fn nothing_listening_is_a_503_too() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let settings = RedisSettings {
        url: SecretUrl::new(format!("redis://:secret-pw@127.0.0.1:{port}")),
        prefix: Some("p:".into()),
        ttl: 60,
        ..RedisSettings::default()
    };
    let store = RedisResponseStore::new(&settings)?;
    let started = Instant::now();
    let err = store.get("x").await.err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let err = err.ok_or_else(|| anyhow::anyhow!("no error"))?;
    assert!(!err.to_string().contains("secret-pw"), "{err}");
    assert_eq!(ApiError::from(err).status_code(), 503);
    Ok(())
}

/// A function without AWS credentials (run outside Lambda, say) cannot use DynamoDB or SQS at
/// all: each call fails at once with a 500 whose log names the variables, not a 503 with
/// `Retry-After` that sends clients into retries no wait can help.
#[tokio::test]
async fn no_aws_credentials_is_a_500_at_once_not_a_retry_invitation() -> anyhow::Result<()> {
    use ak_adapters::AwsConfig;
    use ak_adapters::dynamodb::DynamoResponseStore;
    use ak_adapters::sqs::SqsQueue;
    use ak_core::config::DynamoDbSettings;
    use ak_core::ports::Queue;
    use ak_http::ErrorResponse as _;
    let moto = ak_tests::aws_endpoint();
    let aws = AwsConfig::with_credentials(ak_adapters::aws::MissingCredentials);
    let shared = aws.get().await;
    let table = unique_name("responses");
    ak_tests::create_response_table(&ak_tests::dynamodb_client().await, &table).await?;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(shared)
            .endpoint_url(&moto)
            .build(),
    );
    let settings = DynamoDbSettings {
        table_name: Some(table),
        ttl: 600,
    };
    let store = DynamoResponseStore::new(dynamodb, &settings)?;
    let url = ak_tests::create_queue("nocreds", None).await?;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(shared)
            .endpoint_url(&moto)
            .build(),
    );
    let queue = SqsQueue::new(sqs, &url);
    let record = answer();
    let message = request_for(&record);
    let started = Instant::now();
    let failures = [
        store.put(&record).await.err(),
        store.get(&record.request_id).await.err(),
        queue.send(&message).await.err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries: {:?}",
        started.elapsed()
    );
    for failure in failures {
        let Some(e) = failure else {
            panic!("a call without credentials succeeded")
        };
        assert!(matches!(e, PortError::Misconfigured { .. }), "{e:?}");
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let response = ApiError::from(e).to_response();
        assert_eq!(response.status.as_u16(), 500);
        assert_eq!(response.body["error"], "internal error");
        assert!(!response.headers.contains_key("retry-after"));
    }
    Ok(())
}

/// AWS refusing the function's credentials or its role's permissions, or a table that does not
/// exist, fails the same way on every retry: each is a 500 at once (one attempt, no
/// `Retry-After`) whose log says what to check, not a 503 that sends clients into retries.
#[tokio::test]
async fn aws_refusing_the_credentials_or_the_role_is_a_500_at_once() -> anyhow::Result<()> {
    use ak_adapters::dynamodb::DynamoResponseStore;
    use ak_adapters::sqs::SqsQueue;
    use ak_core::config::DynamoDbSettings;
    use ak_core::ports::Queue;
    use ak_http::ErrorResponse as _;
    use ak_tests::faults::{HttpFault, HttpFaultProxy};

    let faults = HttpFaultProxy::start(&ak_tests::aws_endpoint()).await?;
    let shared = ak_adapters::aws::load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&shared)
            .endpoint_url(&faults.url)
            .build(),
    );
    let table = unique_name("responses");
    ak_tests::create_response_table(&dynamodb, &table).await?;
    let settings = |table: &str| DynamoDbSettings {
        table_name: Some(table.to_owned()),
        ttl: 600,
    };
    let store = DynamoResponseStore::new(dynamodb.clone(), &settings(&table))?;
    let no_table = DynamoResponseStore::new(dynamodb, &settings(&unique_name("missing")))?;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&shared)
            .endpoint_url(&faults.url)
            .build(),
    );
    let queue = SqsQueue::new(sqs, &ak_tests::create_queue("refused", None).await?);
    let refusal = |operation: String, code: &str, message: &str| HttpFault {
        operation,
        times: 1,
        status: 400,
        body: json!({"__type": format!("com.amazon.coral.service#{code}"), "message": message})
            .to_string(),
    };
    let dynamodb_op = |op: &str| format!("DynamoDB_20120810.{op}");
    faults.fail(refusal(
        dynamodb_op("GetItem"),
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    ));
    faults.fail(refusal(
        dynamodb_op("UpdateItem"),
        "AccessDeniedException",
        "User: arn:aws:sts::123456789012:assumed-role/fn/fn is not authorized to perform: dynamodb:UpdateItem",
    ));
    faults.fail(refusal(
        "AmazonSQS.SendMessage".to_owned(),
        "AccessDeniedException",
        "Access to the resource is denied.",
    ));
    let record = answer();
    let message = request_for(&record);
    let failures = [
        ("credentials", store.get(&record.request_id).await.err()),
        ("permission", store.put(&record).await.err()),
        ("permission", queue.send(&message).await.err()),
        (
            "does not exist",
            no_table.get(&record.request_id).await.err(),
        ),
    ];
    assert_eq!(faults.injected(), 3, "one attempt each");
    for (what, failure) in failures {
        let Some(e) = failure else {
            panic!("{what}: the call succeeded")
        };
        assert!(
            matches!(e, PortError::Misconfigured { .. }),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains(what), "{what}: {e}");
        let response = ApiError::from(e).to_response();
        assert_eq!(response.status.as_u16(), 500);
        assert!(!response.headers.contains_key("retry-after"));
    }
    Ok(())
}
