//! The SQS side of the collector: receiving messages ([`poll`]), deciding each one's fate
//! ([`fate`], where the delivery guarantee is decided: delete, retry after a backoff, or
//! poison), keeping it invisible while its work runs ([`heartbeat`]), and deleting confirmed
//! messages in batches ([`deleter`]).
//!
//! All of it talks to the queue through the small [`Queue`] trait: [`sqs::SqsQueue`] in the
//! running collector (its clients built by [`aws`]), [`memory::MemoryQueue`] in the unit tests
//! of message fate. It does not read objects nor talk to the relay: that is [`crate::object`]
//! and [`crate::delivery`], reached through [`fate::Work`].

pub mod aws;
pub mod deleter;
pub mod fate;
pub mod heartbeat;
pub mod memory;
pub mod poll;
pub mod sqs;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so [`Queue`] and [`fate::Work`] can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a queue call failed. The text is one line, fit for a log (see [`aws::describe`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The receipt handle names no message in flight any more (deleted, or its visibility
    /// ran out and it was received again): calls with it can never succeed.
    #[error("{0}")]
    ReceiptGone(String),
    /// Anything else: throttling, an outage, permissions. May heal.
    #[error("{0}")]
    Failed(String),
}

/// One received message, with the system attributes message fate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The queue's message id (logs only).
    pub id: String,
    /// The handle for visibility changes and the delete; None if the queue gave none.
    pub receipt: Option<String>,
    /// The body: a notification, or the event itself in direct mode.
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first receive.
    pub receive_count: u32,
    /// `SentTimestamp`, ms since the epoch.
    pub sent_ms: Option<u64>,
    /// `ApproximateFirstReceiveTimestamp`, ms since the epoch.
    pub first_receive_ms: Option<u64>,
}

/// The calls message fate makes on a queue: receive, change visibility, delete (alone or in
/// batches), and whether the queue has a dead-letter queue (for the poison policy).
pub trait Queue: Send + Sync {
    /// Long-polls for up to `max` messages for at most `wait`; each stays invisible for
    /// `visibility` unless changed.
    fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>>;

    /// Makes the message invisible for `timeout` from now (0: visible at once).
    fn change_visibility<'a>(
        &'a self,
        receipt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Deletes one message.
    fn delete<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Deletes up to 10 messages in one call; per receipt, in order, whether it was deleted.
    /// An error means the call as a whole failed and nothing is known.
    fn delete_batch<'a>(
        &'a self,
        receipts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<bool>, QueueError>>;

    /// Whether the queue has a redrive policy (a dead-letter queue takes what fails too often).
    fn has_dead_letter_queue(&self) -> BoxFuture<'_, Result<bool, QueueError>>;
}
