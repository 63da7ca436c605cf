//! Acknowledgement stage: deletes confirmed SQS messages, several per DeleteMessageBatch
//! call when several are ready at once, and reports each message's own result.
//!
//! Batching adds no delay: the deleter takes what is queued when it wakes (up to SQS's 10),
//! so under load deletes share calls and at light load each goes at once. A failed entry is
//! retried on its own a few times; a delete that never succeeds costs a duplicate (the
//! message is redelivered), never a loss. This stage does not decide *whether* to delete.

use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::{mpsc, oneshot};

use crate::metrics;

/// Most entries in one DeleteMessageBatch call (SQS's limit).
const MAX_BATCH: usize = 10;
/// Attempts for an entry that failed in a batch.
const SINGLE_ATTEMPTS: u32 = 3;

/// A delete request: the receipt handle, the message id (for logs), and where to answer.
struct Request {
    receipt: String,
    message_id: String,
    done: oneshot::Sender<bool>,
}

/// The handle message tasks use to delete.
#[derive(Clone)]
pub struct Deleter {
    tx: mpsc::Sender<Request>,
}

impl Deleter {
    /// Starts the deleter task for one queue. It ends when every handle is dropped.
    pub fn start(sqs: aws_sdk_sqs::Client, queue_url: String, input: String) -> Deleter {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(run(sqs, queue_url, input, rx));
        Deleter { tx }
    }

    /// Deletes one message; true once SQS confirmed it.
    pub async fn delete(&self, receipt: &str, message_id: &str) -> bool {
        let (done, answer) = oneshot::channel();
        let request = Request {
            receipt: receipt.to_string(),
            message_id: message_id.to_string(),
            done,
        };
        if self.tx.send(request).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

async fn run(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    input: String,
    mut rx: mpsc::Receiver<Request>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        delete_batch(&sqs, &queue_url, &input, std::mem::take(&mut batch)).await;
    }
}

async fn delete_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    input: &str,
    batch: Vec<Request>,
) {
    let entries: Vec<DeleteMessageBatchRequestEntry> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&r.receipt)
                .build()
                .ok()
        })
        .collect();
    let failed: Vec<usize> = match sqs
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => {
            for f in out.failed() {
                tracing::warn!(
                    input,
                    queue = queue_url,
                    code = f.code(),
                    reason = f.message().unwrap_or(""),
                    "delete failed in batch; retrying alone"
                );
            }
            let mut failed: Vec<usize> = out
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .collect();
            // An entry SQS neither confirmed nor refused is retried too.
            let answered: Vec<usize> = out
                .successful()
                .iter()
                .filter_map(|s| s.id().parse().ok())
                .chain(failed.iter().copied())
                .collect();
            failed.extend((0..batch.len()).filter(|i| !answered.contains(i)));
            failed
        }
        Err(e) => {
            tracing::warn!(input, queue = queue_url, error = %crate::queue::aws::describe(&e), "DeleteMessageBatch failed; retrying one by one");
            (0..batch.len()).collect()
        }
    };
    for (i, request) in batch.into_iter().enumerate() {
        let ok = !failed.contains(&i) || delete_one(sqs, queue_url, input, &request).await;
        if ok {
            metrics::count(
                "sluice_messages_deleted_total",
                "Messages deleted after confirmation",
                &[("input", input)],
                1,
            );
        }
        let _ = request.done.send(ok);
    }
}

async fn delete_one(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    input: &str,
    request: &Request,
) -> bool {
    for attempt in 1..=SINGLE_ATTEMPTS {
        match sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(&request.receipt)
            .send()
            .await
        {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(input, queue = queue_url, message_id = %request.message_id, attempt, error = %crate::queue::aws::describe(&e), "delete failed");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(input, queue = queue_url, message_id = %request.message_id, "could not delete a confirmed message; it will be redelivered (a duplicate)");
    false
}
