//! Queues: the same behaviour from the in-memory queue and SQS (moto), standard and FIFO.

use ak_adapters::sqs::SqsQueue;
use ak_core::ports::memory::MemoryQueue;
use ak_core::ports::{Queue, QueueMessage};
use ak_tests::{sqs_client, unique_name};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn create_queue(name: &str, visibility_secs: u32, redrive: Option<String>) -> String {
    let sqs = sqs_client().await;
    let mut request = sqs.create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        visibility_secs.to_string(),
    );
    if name.ends_with(".fifo") {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some(policy) = redrive {
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url
        .unwrap_or_else(|| panic!("no url for {name}"))
}

async fn sqs_queue(fifo: bool) -> Arc<dyn Queue> {
    let name = unique_name("q") + if fifo { ".fifo" } else { "" };
    let url = create_queue(&name, 1, None).await;
    Arc::new(SqsQueue::new(sqs_client().await, &url))
}

async fn sqs_standard() -> Arc<dyn Queue> {
    sqs_queue(false).await
}

async fn sqs_fifo() -> Arc<dyn Queue> {
    sqs_queue(true).await
}

async fn memory_standard() -> Arc<dyn Queue> {
    Arc::new(MemoryQueue::new(false, Duration::from_secs(1)))
}

async fn memory_fifo() -> Arc<dyn Queue> {
    Arc::new(MemoryQueue::new(true, Duration::from_secs(1)))
}

fn message(session: &str) -> QueueMessage {
    QueueMessage {
        request_id: unique_name("req"),
        session_id: session.to_owned(),
        user_id: Some("user-a".to_owned()),
        status_code: Some(200),
        attempt: None,
        body: json!({"prompt": "what is 12 * 7", "agent": "math", "session_id": session, "extra": [1, {"k": "v"}]}),
    }
}

async fn body_and_attributes_survive_the_trip(queue: Arc<dyn Queue>) {
    let sent = message(&unique_name("s"));
    let mut anonymous = message(&unique_name("s"));
    anonymous.user_id = None;
    anonymous.status_code = None;
    queue.send(&sent).await.unwrap_or_else(|e| panic!("{e}"));
    queue
        .send(&anonymous)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut got = Vec::new();
    for _ in 0..5 {
        let records = queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for record in records {
            let delivery = QueueMessage::from_sqs_record(&record).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(delivery.receive_count, 1);
            queue
                .delete(record.receipt_handle.as_deref().unwrap_or_default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            got.push(delivery.message);
        }
        if got.len() == 2 {
            break;
        }
    }
    got.sort_by_key(|m| m.user_id.is_none());
    assert_eq!(got, vec![sent, anonymous]);
    let rest = queue
        .receive(10, Duration::from_millis(1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rest.is_empty(), "deleted messages do not come back");
}

async fn unacknowledged_messages_come_back_counted(queue: Arc<dyn Queue>) {
    let sent = message(&unique_name("s"));
    queue.send(&sent).await.unwrap_or_else(|e| panic!("{e}"));
    let first = queue
        .receive(1, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.len(), 1);
    let again = queue
        .receive(1, Duration::from_secs(4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.len(), 1, "visible again after the visibility timeout");
    let delivery = QueueMessage::from_sqs_record(&again[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(delivery.message, sent);
    assert_eq!(delivery.receive_count, 2);
}

macro_rules! suite {
    ($($backend:ident),+) => {
        $(mod $backend {
            use super::*;
            #[tokio::test]
            async fn body_and_attributes_survive_the_trip() { super::body_and_attributes_survive_the_trip($backend().await).await }
            #[tokio::test]
            async fn unacknowledged_messages_come_back_counted() { super::unacknowledged_messages_come_back_counted($backend().await).await }
        })+
    };
}

suite!(memory_standard, memory_fifo, sqs_standard, sqs_fifo);

#[tokio::test]
async fn fifo_messages_carry_group_and_deduplication_ids() {
    let queue = sqs_fifo().await;
    let sent = message("session-7");
    queue.send(&sent).await.unwrap_or_else(|e| panic!("{e}"));
    queue.send(&sent).await.unwrap_or_else(|e| panic!("{e}"));
    let records = queue
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(records.len(), 1, "the retried send was deduplicated");
    assert_eq!(
        records[0]
            .attributes
            .get("MessageGroupId")
            .map(String::as_str),
        Some("session-7")
    );
    assert_eq!(
        records[0].attributes.get("MessageDeduplicationId"),
        Some(&sent.request_id)
    );
}

#[tokio::test]
async fn memory_fifo_keeps_one_session_in_order_and_deduplicates() {
    let queue = memory_fifo().await;
    let first = message("s1");
    let second = message("s1");
    let other = message("s2");
    for m in [&first, &first, &second, &other] {
        queue.send(m).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let batch = queue
        .receive(1, Duration::from_millis(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids = |records: &[aws_lambda_events::sqs::SqsMessage]| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                QueueMessage::from_sqs_record(r)
                    .map(|d| d.message.request_id)
                    .unwrap_or_default()
            })
            .collect()
    };
    assert_eq!(ids(&batch), vec![first.request_id.clone()]);
    let next = queue
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ids(&next),
        vec![other.request_id.clone()],
        "s1's second message waits while its first is in flight; s2 is free"
    );
    queue
        .delete(batch[0].receipt_handle.as_deref().unwrap_or_default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let last = queue
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids(&last), vec![second.request_id.clone()]);
}

#[tokio::test]
async fn sqs_redrives_to_the_dead_letter_queue_after_max_receives() {
    let sqs = sqs_client().await;
    let dlq_url = create_queue(&unique_name("dlq"), 30, None).await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_else(|| panic!("no DLQ arn"));
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string();
    let url = create_queue(&unique_name("q"), 1, Some(policy)).await;
    let queue = SqsQueue::new(sqs.clone(), &url);
    let sent = message("s");
    queue.send(&sent).await.unwrap_or_else(|e| panic!("{e}"));

    let mut receives = 0;
    for _ in 0..4 {
        let got = queue
            .receive(1, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        receives += got.len();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(
        receives, 2,
        "received max_receive_count times, then redriven"
    );
    let dlq = SqsQueue::new(sqs, &dlq_url);
    let dead = dlq
        .receive(1, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1);
    let delivery = QueueMessage::from_sqs_record(&dead[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        delivery.message, sent,
        "the dead letter keeps body and attributes"
    );
}
