//! [`Queue`] in memory, for the unit tests of message fate: messages with receive counts and
//! visibility (on tokio's clock, so a paused test clock drives it), a log of every call, and
//! failures on demand.
//!
//! It models what fate depends on, not SQS: no ordering guarantees, no duplicates, no dead-letter
//! moves (whether a DLQ exists is a flag).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxFuture, Queue, QueueError, Received};

/// A call the queue received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A receive that returned these message ids.
    Receive(Vec<String>),
    /// A visibility change of message `id` to `seconds`.
    ChangeVisibility { id: String, seconds: u64 },
    /// A single delete of message `id`, and whether it succeeded.
    Delete { id: String, ok: bool },
    /// A batch delete of these message ids.
    DeleteBatch(Vec<String>),
}

#[derive(Debug)]
struct Stored {
    id: String,
    body: String,
    receive_count: u32,
    /// The receipt of the last receive; older ones are gone.
    receipt: Option<String>,
    visible_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Stored>,
    sent: u64,
    calls: Vec<Call>,
    /// Deletes (single or batch entries) to fail before they succeed again.
    failing_deletes: u32,
}

/// An in-memory queue.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    dead_letter_queue: bool,
}

impl MemoryQueue {
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    /// A queue that reports a redrive policy (a dead-letter queue).
    pub fn with_dead_letter_queue() -> Self {
        MemoryQueue {
            dead_letter_queue: true,
            ..MemoryQueue::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues `body`, visible at once; returns its id.
    pub fn send(&self, body: &str) -> String {
        let mut s = self.lock();
        s.sent += 1;
        let id = format!("m{}", s.sent);
        s.messages.push_back(Stored {
            id: id.clone(),
            body: body.to_string(),
            receive_count: 0,
            receipt: None,
            visible_at: Instant::now(),
        });
        id
    }

    /// Receives message `id` now, visible or not, as if SQS had picked it: tests start a
    /// message's fate from here. `receive_count` sets how often it was received (this one
    /// included).
    pub fn take(&self, id: &str, receive_count: u32, visibility: Duration) -> Received {
        let mut s = self.lock();
        let m = s
            .messages
            .iter_mut()
            .find(|m| m.id == id)
            .expect("a message of this queue");
        m.receive_count = receive_count - 1;
        receive_one(m, visibility)
    }

    /// Whether message `id` is still in the queue (not deleted).
    pub fn contains(&self, id: &str) -> bool {
        self.lock().messages.iter().any(|m| m.id == id)
    }

    /// How long until message `id` is visible again (zero when it is).
    pub fn invisible_for(&self, id: &str) -> Option<Duration> {
        let s = self.lock();
        let m = s.messages.iter().find(|m| m.id == id)?;
        Some(m.visible_at.saturating_duration_since(Instant::now()))
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The visibility changes so far, in seconds.
    pub fn visibility_changes(&self) -> Vec<u64> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::ChangeVisibility { seconds, .. } => Some(seconds),
                _ => None,
            })
            .collect()
    }

    /// Makes the next `n` deletes fail (batch entries and single deletes alike).
    pub fn fail_deletes(&self, n: u32) {
        self.lock().failing_deletes = n;
    }
}

fn receive_one(m: &mut Stored, visibility: Duration) -> Received {
    m.receive_count += 1;
    let receipt = format!("{}#{}", m.id, m.receive_count);
    m.receipt = Some(receipt.clone());
    m.visible_at = Instant::now() + visibility;
    Received {
        id: m.id.clone(),
        receipt: Some(receipt),
        body: m.body.clone(),
        receive_count: m.receive_count,
        sent_ms: None,
        first_receive_ms: None,
    }
}

impl State {
    /// The message `receipt` names, while it is in flight (received, not visible again).
    fn in_flight(&mut self, receipt: &str) -> Result<&mut Stored, QueueError> {
        let now = Instant::now();
        self.messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt) && m.visible_at > now)
            .ok_or_else(|| QueueError::ReceiptGone(format!("ReceiptHandleIsInvalid: {receipt}")))
    }

    /// Deletes the message `receipt` names, unless a failure was asked for.
    fn delete(&mut self, receipt: &str) -> Result<String, QueueError> {
        if self.failing_deletes > 0 {
            self.failing_deletes -= 1;
            return Err(QueueError::Failed("InternalError: asked to fail".into()));
        }
        let id = self.in_flight(receipt)?.id.clone();
        self.messages.retain(|m| m.id != id);
        Ok(id)
    }
}

/// The message id a receipt was made from (receipts are `<id>#<receive>`).
fn id_of(receipt: &str) -> String {
    receipt.split('#').next().unwrap_or(receipt).to_string()
}

impl Queue for MemoryQueue {
    fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            loop {
                {
                    let mut s = self.lock();
                    let now = Instant::now();
                    let got: Vec<Received> = s
                        .messages
                        .iter_mut()
                        .filter(|m| m.visible_at <= now)
                        .take(max as usize)
                        .map(|m| receive_one(m, visibility))
                        .collect();
                    if !got.is_empty() || now >= deadline {
                        s.calls
                            .push(Call::Receive(got.iter().map(|m| m.id.clone()).collect()));
                        return Ok(got);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn change_visibility<'a>(
        &'a self,
        receipt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let mut s = self.lock();
            s.calls.push(Call::ChangeVisibility {
                id: id_of(receipt),
                seconds: timeout.as_secs(),
            });
            s.in_flight(receipt)?.visible_at = Instant::now() + timeout;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let mut s = self.lock();
            let result = s.delete(receipt);
            s.calls.push(Call::Delete {
                id: id_of(receipt),
                ok: result.is_ok(),
            });
            result.map(|_| ())
        })
    }

    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, QueueError>> {
        Box::pin(async move {
            let mut s = self.lock();
            s.calls.push(Call::DeleteBatch(
                receipts.iter().map(|r| id_of(r)).collect(),
            ));
            Ok(receipts.iter().map(|r| s.delete(r).is_ok()).collect())
        })
    }

    fn has_dead_letter_queue(&self) -> BoxFuture<'_, Result<bool, QueueError>> {
        Box::pin(async move { Ok(self.dead_letter_queue) })
    }
}
