//! The harness reaches real Redis and a real SQS wire protocol (moto), each test on its own names.

use ak_tests::{redis_connection, sqs_client, unique_name};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};

#[tokio::test]
async fn redis_keys_round_trip_with_expiry() -> anyhow::Result<()> {
    let mut conn = redis_connection().await?;
    let key = format!("{}:greeting", unique_name("harness"));
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("hello")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await?;
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert_eq!(value.as_deref(), Some("hello"));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
    assert!((1..=60).contains(&ttl), "TTL {ttl}");
    let other: Option<String> = redis::cmd("GET")
        .arg(format!("{}:greeting", unique_name("harness")))
        .query_async(&mut conn)
        .await?;
    assert_eq!(other, None, "names are unique per test");
    Ok(())
}

#[tokio::test]
async fn sqs_on_moto_sends_and_receives_with_attributes() -> anyhow::Result<()> {
    let sqs = sqs_client().await;
    let name = unique_name("harness");
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no queue url"))?;
    assert!(url.contains(&name));

    sqs.send_message()
        .queue_url(&url)
        .message_body(r#"{"prompt":"hello"}"#)
        .message_attributes(
            "request_id",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("req-1")
                .build()?,
        )
        .send()
        .await?;

    let received = sqs
        .receive_message()
        .queue_url(&url)
        .message_attribute_names("All")
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .wait_time_seconds(1)
        .send()
        .await?;
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.body.as_deref(), Some(r#"{"prompt":"hello"}"#));
    let request_id = message
        .message_attributes
        .as_ref()
        .and_then(|a| a.get("request_id"))
        .and_then(|v| v.string_value.clone());
    assert_eq!(request_id.as_deref(), Some("req-1"));

    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await?;
    assert!(attrs.attributes.is_some());
    sqs.delete_queue().queue_url(&url).send().await?;
    Ok(())
}

#[tokio::test]
async fn the_scripted_model_answers_in_openai_format_and_records_requests() -> anyhow::Result<()> {
    use ak_tests::model_server::{Reply, ScriptedModel};
    let model = ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "transfer_to_math".into(),
            arguments: serde_json::json!({}),
        },
        Reply::Text("84".into()),
        Reply::Status(429),
    ])
    .await?;
    let ask = serde_json::json!({"model": "gpt-test", "messages": [{"role": "user", "content": "what is 12 * 7"}]});

    let (status, first) =
        ak_tests::http_json(&model.base_url, "POST", "/chat/completions", Some(&ask)).await?;
    assert_eq!(status, 200);
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        first["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "transfer_to_math"
    );
    let (status, second) =
        ak_tests::http_json(&model.base_url, "POST", "/chat/completions", Some(&ask)).await?;
    assert_eq!(
        (status, second["choices"][0]["message"]["content"].as_str()),
        (200, Some("84"))
    );
    assert_eq!(second["usage"]["total_tokens"], 18);
    let (status, third) =
        ak_tests::http_json(&model.base_url, "POST", "/chat/completions", Some(&ask)).await?;
    assert_eq!(status, 429);
    assert!(third["error"]["message"].is_string());
    let (status, _) =
        ak_tests::http_json(&model.base_url, "POST", "/chat/completions", Some(&ask)).await?;
    assert_eq!(status, 500, "an exhausted script fails loudly");

    assert_eq!(model.calls(), 4);
    assert_eq!(
        model.requests()[0]["messages"][0]["content"],
        "what is 12 * 7"
    );
    Ok(())
}
