//! Lambda's SQS event source mapping, played for a function binary under a local
//! [`RuntimeApi`]: receives batches from a queue (moto), invokes the function with each as an
//! SQS event, and deletes the messages the function did not report as batch item failures
//! (`ReportBatchItemFailures`). A batch whose invocation fails or never answers (the function
//! was killed) is left alone: its messages come back after their visibility timeout, counted,
//! and move to the dead-letter queue after the redrive policy's receives — as on AWS.

use crate::runtime_api::{Outcome, RuntimeApi};
use ak_core::ports::Queue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A running event source mapping; stops when dropped.
pub struct EventSource {
    task: tokio::task::JoinHandle<()>,
    invocations: Arc<AtomicU64>,
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventSource {
    /// Polls `queue` for `api`'s function: batches of up to `batch_size`, each invocation given
    /// `timeout` to answer (the function's timeout).
    pub fn start(
        queue: Arc<dyn Queue>,
        api: Arc<RuntimeApi>,
        batch_size: usize,
        timeout: Duration,
    ) -> Self {
        let invocations = Arc::new(AtomicU64::new(0));
        let count = invocations.clone();
        let task = tokio::spawn(async move {
            loop {
                let records = match queue.receive(batch_size, Duration::from_secs(1)).await {
                    Ok(records) if !records.is_empty() => records,
                    Ok(_) => continue,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let receipts: Vec<(String, String)> = records
                    .iter()
                    .map(|r| {
                        (
                            r.message_id.clone().unwrap_or_default(),
                            r.receipt_handle.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                let event = json!({"Records": records});
                count.fetch_add(1, Ordering::Relaxed);
                let id = api.invoke_raw(&event.to_string(), timeout);
                let failed: Option<Vec<String>> =
                    match api.outcome(&id, timeout + Duration::from_secs(1)).await {
                        Some((Outcome::Response(answer), _)) => Some(
                            answer["batchItemFailures"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                                .collect(),
                        ),
                        // An error or no answer at all: the whole batch comes back.
                        _ => None,
                    };
                let Some(failed) = failed else {
                    continue;
                };
                for (message_id, receipt) in receipts {
                    if !failed.contains(&message_id) {
                        let _ = queue.delete(&receipt).await;
                    }
                }
            }
        });
        Self { task, invocations }
    }

    /// Invocations so far.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }
}

/// Creates a standard SQS queue on moto with this visibility timeout and a dead-letter queue
/// that takes its messages after `max_receives` receives; returns (queue URL, DLQ URL).
pub async fn queue_with_dlq(
    prefix: &str,
    visibility_secs: u32,
    max_receives: u32,
) -> anyhow::Result<(String, String)> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let sqs = crate::sqs_client().await;
    let dlq = sqs
        .create_queue()
        .queue_name(crate::unique_name(&format!("{prefix}-dlq")))
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no DLQ URL"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow::anyhow!("no DLQ ARN"))?;
    let redrive: Value = json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives});
    let queue = sqs
        .create_queue()
        .queue_name(crate::unique_name(prefix))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no queue URL"))?;
    Ok((queue, dlq))
}

/// How many messages a queue holds, visible or in flight.
pub async fn depth(queue_url: &str) -> anyhow::Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attributes = crate::sqs_client()
        .await
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?
        .attributes
        .unwrap_or_default();
    let count = |name: QueueAttributeName| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
