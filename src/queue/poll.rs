//! The poll loop of one queue: takes room for messages under the process-wide cap on
//! messages in flight, long-polls for that many, and starts [`fate::handle`] on each.
//!
//! It schedules; what becomes of a message is [`fate`]'s call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fate::{self, InputContext};
use crate::delivery::forward::jitter;
use crate::telemetry;

/// First wait after a failed receive; doubles per failure in a row.
const ERROR_DELAY_START: Duration = Duration::from_secs(1);
/// Longest wait after failed receives.
const ERROR_DELAY_CAP: Duration = Duration::from_secs(60);

/// Long-polls the input's queue while `intake` is open; message tasks go on `tracker`.
pub async fn poll(
    ctx: Arc<InputContext>,
    in_flight: Arc<Semaphore>,
    tracker: TaskTracker,
    intake: CancellationToken,
    hard_stop: CancellationToken,
) {
    let settings = &ctx.settings;
    let mut error_delay = ERROR_DELAY_START;
    loop {
        // Take capacity before receiving: a message is only received when there is room to
        // work on it, so nothing sits invisible in a local queue.
        let first = tokio::select! {
            _ = intake.cancelled() => return,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        while permits.len() < settings.max_messages as usize {
            match in_flight.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = ctx.queue.receive(
            permits.len() as u32,
            settings.wait_time,
            settings.visibility_timeout,
        );
        let result = tokio::select! {
            // A receive cut short by shutdown returns nothing: no message is lost, as any
            // message SQS had picked for it becomes visible again after its timeout.
            _ = intake.cancelled() => return,
            r = receive => r,
        };
        let messages = match result {
            Ok(messages) => {
                error_delay = ERROR_DELAY_START;
                messages
            }
            Err(e) => {
                telemetry::receive_failed(&settings.name, &settings.queue_url, &e, error_delay);
                drop(permits);
                tokio::select! {
                    _ = intake.cancelled() => return,
                    _ = tokio::time::sleep(jitter(error_delay)) => {}
                }
                error_delay = (error_delay * 2).min(ERROR_DELAY_CAP);
                continue;
            }
        };
        telemetry::received(&settings.name, messages.len());
        for message in messages {
            let Some(permit) = permits.pop() else { break };
            let ctx = ctx.clone();
            let hard_stop = hard_stop.clone();
            tracker.spawn(async move {
                fate::handle(ctx, message, hard_stop).await;
                drop(permit);
            });
        }
    }
}
