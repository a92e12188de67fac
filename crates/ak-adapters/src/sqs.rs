//! SQS queues. Standard queues and FIFO queues (`.fifo`): on FIFO queues the session id is the
//! message group (one session's requests stay in order) and the request id the deduplication id
//! (a retried send within five minutes is not delivered twice; see
//! [`QueueMessage::deduplication_id`] for the sends of one request that must all arrive).

use crate::{CALL_TIMEOUT, with_timeout};
use ak_core::ports::{Backend, PortError, Queue, QueueMessage};
use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use std::time::Duration;
use tracing::Instrument as _;

/// Longest long-poll SQS allows.
const MAX_WAIT: Duration = Duration::from_secs(20);

/// A failed SDK call: the configuration's fault, or an outage (see [`crate::aws::sdk_failure`]).
fn unavailable(
    e: impl aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
) -> PortError {
    crate::aws::sdk_failure(Backend::Sqs, e)
}

/// JSON text as SQS takes it: SQS refuses message bodies with characters outside XML's set
/// (`InvalidMessageContents`); of those, JSON text can hold U+FFFE and U+FFFF raw (only inside
/// strings, where the `\u` escape means the same).
fn sqs_safe(json: String) -> String {
    if !json.contains(['\u{fffe}', '\u{ffff}']) {
        return json;
    }
    json.replace('\u{fffe}', "\\ufffe")
        .replace('\u{ffff}', "\\uffff")
}

/// A send error: a message too large for the queue (or otherwise refused for what it holds) is
/// permanent; anything else may pass.
fn send_error<R: std::fmt::Debug + 'static>(
    e: aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::send_message::SendMessageError, R>,
    message: &QueueMessage,
    size: usize,
) -> PortError {
    use aws_sdk_sqs::error::ProvideErrorMetadata;
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
    let text = e.as_service_error().and_then(|s| s.message()).unwrap_or("");
    if code.contains("InvalidParameterValue") && text.contains("shorter than") {
        return PortError::TooLarge {
            what: "queue message",
            request_id: message.request_id.clone(),
            size,
            limit: format!("the queue refused it: {text} (the queue's MaximumMessageSize)"),
        };
    }
    if code.contains("InvalidMessageContents") {
        return PortError::Rejected(format!("SQS refused the message: {text}"));
    }
    unavailable(e)
}

/// One SQS queue.
pub struct SqsQueue {
    client: crate::aws::SdkClient<aws_sdk_sqs::Client>,
    url: String,
    fifo: bool,
}

impl SqsQueue {
    /// The queue at `url`, reached through `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: &str) -> Self {
        Self::with_client(crate::aws::SdkClient::ready(client), url)
    }

    /// The queue at `url`, its client made from `aws` on first use.
    pub fn lazy(aws: &crate::AwsConfig, url: &str) -> Self {
        Self::with_client(
            crate::aws::SdkClient::lazy(aws, aws_sdk_sqs::Client::new),
            url,
        )
    }

    fn with_client(client: crate::aws::SdkClient<aws_sdk_sqs::Client>, url: &str) -> Self {
        Self {
            client,
            url: url.to_owned(),
            fifo: url.ends_with(".fifo"),
        }
    }

    /// One `SendMessage` inside `span` (which it carries as the `traceparent` attribute and
    /// names the message id on).
    async fn send_in(&self, message: &QueueMessage, span: &tracing::Span) -> Result<(), PortError> {
        let mut request = self
            .client
            .get()
            .await
            .send_message()
            .queue_url(&self.url)
            .message_body(sqs_safe(message.body.to_string()));
        let size = request.get_message_body().as_ref().map_or(0, String::len);
        for (name, value) in message.attributes() {
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PortError::unavailable(Backend::Sqs, e))?;
            request = request.message_attributes(name, attr);
        }
        if let Some(traceparent) = ak_core::otel::current_traceparent() {
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(traceparent)
                .build()
                .map_err(|e| PortError::unavailable(Backend::Sqs, e))?;
            request = request.message_attributes(ak_core::ports::ATTR_TRACEPARENT, attr);
        }
        if self.fifo {
            request = request
                .message_group_id(&message.session_id)
                .message_deduplication_id(message.deduplication_id());
        }
        with_timeout(Backend::Sqs, CALL_TIMEOUT, async {
            let sent = request
                .send()
                .await
                .map_err(|e| send_error(e, message, size))?;
            if let Some(id) = sent.message_id() {
                span.record("messaging.message.id", id);
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), PortError> {
        let span = ak_core::otel::producer_span(&self.url);
        let sent = self.send_in(message, &span).instrument(span.clone()).await;
        if let Err(e) = &sent {
            let class = match e {
                PortError::TooLarge { .. } => "too_large",
                PortError::Rejected(_) => "rejected",
                _ => "unavailable",
            };
            ak_core::otel::record_error(&span, class);
        }
        sent
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, PortError> {
        let wait = wait.min(MAX_WAIT);
        let max = i32::try_from(max.clamp(1, 10)).unwrap_or(10);
        let request = self
            .client
            .get()
            .await
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            // A long poll waits `wait` for its answer: its attempt may take that long.
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(crate::aws::timeouts(wait + crate::aws::ATTEMPT_TIMEOUT)),
            );
        let output = with_timeout(Backend::Sqs, wait + CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| to_record(m, &self.url))
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        let request = self
            .client
            .get()
            .await
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt);
        with_timeout(Backend::Sqs, CALL_TIMEOUT, async {
            request.send().await.map(drop).map_err(unavailable)
        })
        .await
    }
}

/// An SDK message of the queue at `url` as the record a Lambda SQS event would carry.
fn to_record(message: aws_sdk_sqs::types::Message, url: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    // `https://sqs.<region>.amazonaws.com/<account>/<name>` → `arn:aws:sqs:<region>:<account>:<name>`.
    let mut segments = url.trim_end_matches('/').rsplit('/');
    let (name, account) = (
        segments.next().unwrap_or_default(),
        segments.next().unwrap_or_default(),
    );
    let region = url.split('.').nth(1).unwrap_or_default();
    record.event_source_arn = Some(format!("arn:aws:sqs:{region}:{account}:{name}"));
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.md5_of_message_attributes = message.md5_of_message_attributes;
    record.event_source = Some("aws:sqs".to_owned());
    for (name, value) in message.attributes.unwrap_or_default() {
        record.attributes.insert(name.as_str().to_owned(), value);
    }
    for (name, value) in message.message_attributes.unwrap_or_default() {
        let mut attr = SqsMessageAttribute::default();
        attr.string_value = value.string_value;
        attr.data_type = Some(value.data_type);
        record.message_attributes.insert(name, attr);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_lose_the_characters_sqs_refuses_but_mean_the_same() {
        let body = serde_json::json!({"prompt": "a\u{ffff}b\u{fffe}c\u{1F600}"}).to_string();
        let safe = sqs_safe(body.clone());
        assert!(!safe.contains(['\u{fffe}', '\u{ffff}']), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap_or_default();
        assert_eq!(back.to_string(), body);
        assert_eq!(sqs_safe("{}".to_owned()), "{}");
    }
}
