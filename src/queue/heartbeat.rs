//! The visibility heartbeat: while a message's work runs, extend its invisibility before it
//! runs out, so the queue does not hand the message to another receiver mid-work.
//!
//! It only extends; whether the message is deleted or retried is [`super::fate`]'s call.

use std::time::Duration;

use super::{Queue, QueueError};
use crate::telemetry;

/// Shortest period between two extensions, whatever the visibility timeout.
const MIN_PERIOD: Duration = Duration::from_millis(500);

/// The message a heartbeat keeps invisible.
pub struct Beat<'a> {
    pub queue: &'a dyn Queue,
    /// Input name, for logs and metrics.
    pub input: &'a str,
    pub receipt: &'a str,
    pub message_id: &'a str,
    /// How long each extension lasts; zero turns the heartbeat off.
    pub visibility: Duration,
}

/// Every half visibility timeout, extends the message's invisibility to a full one. Returns
/// only when the receipt is gone (deleted, or received again elsewhere); the caller drops it
/// when the work ends.
pub async fn keep_invisible(beat: Beat<'_>) {
    if beat.visibility.is_zero() {
        return;
    }
    let period = (beat.visibility / 2).max(MIN_PERIOD);
    loop {
        tokio::time::sleep(period).await;
        match beat
            .queue
            .change_visibility(beat.receipt, beat.visibility)
            .await
        {
            Ok(()) => telemetry::visibility_extended(beat.input),
            Err(e) => {
                telemetry::visibility_not_extended(beat.input, beat.message_id, &e);
                if matches!(e, QueueError::ReceiptGone(_)) {
                    return;
                }
            }
        }
    }
}
