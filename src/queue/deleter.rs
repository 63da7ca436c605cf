//! Acknowledgement stage: deletes confirmed SQS messages, several per DeleteMessageBatch
//! call when several are ready at once, and reports each message's own result.
//!
//! Batching adds no delay: the deleter takes what is queued when it wakes (up to SQS's 10),
//! so under load deletes share calls and at light load each goes at once. A failed entry is
//! retried on its own a few times; a delete that never succeeds costs a duplicate (the
//! message is redelivered), never a loss. This stage does not decide *whether* to delete.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Queue;
use crate::telemetry;

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

/// What the deleter task works with.
struct Target {
    queue: Arc<dyn Queue>,
    /// Queue URL and input name, for logs and metrics.
    queue_url: String,
    input: String,
}

impl Deleter {
    /// Starts the deleter task for one queue. It ends when every handle is dropped.
    pub fn start(queue: Arc<dyn Queue>, queue_url: String, input: String) -> Deleter {
        let (tx, rx) = mpsc::channel(256);
        let target = Target {
            queue,
            queue_url,
            input,
        };
        tokio::spawn(run(target, rx));
        Deleter { tx }
    }

    /// Deletes one message; true once the queue confirmed it.
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

async fn run(target: Target, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        delete_batch(&target, std::mem::take(&mut batch)).await;
    }
}

async fn delete_batch(target: &Target, batch: Vec<Request>) {
    let (input, queue_url) = (target.input.as_str(), target.queue_url.as_str());
    let receipts: Vec<String> = batch.iter().map(|r| r.receipt.clone()).collect();
    let deleted = match target.queue.delete_batch(&receipts).await {
        Ok(deleted) => deleted,
        Err(e) => {
            telemetry::delete_batch_failed(input, queue_url, &e);
            vec![false; batch.len()]
        }
    };
    for (i, request) in batch.into_iter().enumerate() {
        let ok = deleted.get(i).copied().unwrap_or(false) || delete_one(target, &request).await;
        if ok {
            telemetry::message_deleted(input);
        }
        let _ = request.done.send(ok);
    }
}

async fn delete_one(target: &Target, request: &Request) -> bool {
    let (input, queue_url) = (target.input.as_str(), target.queue_url.as_str());
    for attempt in 1..=SINGLE_ATTEMPTS {
        match target.queue.delete(&request.receipt).await {
            Ok(()) => return true,
            Err(e) => {
                telemetry::delete_failed(input, queue_url, &request.message_id, attempt, &e);
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
    telemetry::delete_abandoned(input, queue_url, &request.message_id);
    false
}
