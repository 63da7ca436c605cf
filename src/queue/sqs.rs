//! [`Queue`] on Amazon SQS (or any endpoint speaking its API): the collector's real queue.
//!
//! It maps calls and errors; it decides nothing (see [`super::fate`]).

use std::time::Duration;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};

use super::aws::describe;
use super::{BoxFuture, Queue, QueueError, Received};

/// One SQS queue, through the input's client.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    /// The input's name, for the log lines of failed batch entries.
    input: String,
}

impl SqsQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>, input: impl Into<String>) -> Self {
        SqsQueue {
            sqs,
            url: url.into(),
            input: input.into(),
        }
    }
}

/// An SDK error as a [`QueueError`]: a receipt SQS no longer knows is gone for good.
fn queue_error<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = describe(err);
    if text.contains("ReceiptHandleIsInvalid") || text.contains("MessageNotInflight") {
        QueueError::ReceiptGone(text)
    } else {
        QueueError::Failed(text)
    }
}

fn received(message: Message) -> Received {
    let attribute = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let receive_count =
        attribute(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as u32;
    let sent_ms = attribute(MessageSystemAttributeName::SentTimestamp);
    let first_receive_ms = attribute(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);
    Received {
        id: message.message_id().unwrap_or("-").to_string(),
        receipt: message.receipt_handle().map(str::to_string),
        body: message.body().unwrap_or("").to_string(),
        receive_count,
        sent_ms,
        first_receive_ms,
    }
}

impl Queue for SqsQueue {
    fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>> {
        Box::pin(async move {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max as i32)
                .wait_time_seconds(wait.as_secs() as i32)
                .visibility_timeout(visibility.as_secs() as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_system_attribute_names(
                    MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                )
                .send()
                .await
                .map_err(|e| queue_error(&e))?;
            Ok(out
                .messages
                .unwrap_or_default()
                .into_iter()
                .map(received)
                .collect())
        })
    }

    fn change_visibility<'a>(
        &'a self,
        receipt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.sqs
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .visibility_timeout(timeout.as_secs() as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| queue_error(&e))
        })
    }

    fn delete<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| queue_error(&e))
        })
    }

    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, QueueError>> {
        Box::pin(async move {
            let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| queue_error(&e))?;
            for f in out.failed() {
                tracing::warn!(
                    input = self.input.as_str(),
                    queue = self.url.as_str(),
                    code = f.code(),
                    reason = f.message().unwrap_or(""),
                    "delete failed in batch; retrying alone"
                );
            }
            // Only entries SQS confirmed count: one it neither confirmed nor refused is
            // retried too.
            let mut deleted = vec![false; receipts.len()];
            for s in out.successful() {
                if let Some(slot) = s
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| deleted.get_mut(i))
                {
                    *slot = true;
                }
            }
            Ok(deleted)
        })
    }

    fn has_dead_letter_queue(&self) -> BoxFuture<'_, Result<bool, QueueError>> {
        Box::pin(async move {
            let out = self
                .sqs
                .get_queue_attributes()
                .queue_url(&self.url)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| queue_error(&e))?;
            Ok(out
                .attributes
                .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)))
        })
    }
}
