//! Waiting for states with a deadline (poll), never sleeping for a guess: a condition, or the
//! collector + queue + relay settling so that nothing more can arrive.

use std::time::{Duration, Instant};

use crate::metrics::metric_sum;
use crate::moto::Wired;
use crate::process::Proc;

/// Polls `check` every 100 ms until it holds or `timeout` passes (async).
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// As [`wait_for`], blocking the thread (every 20 ms).
pub fn poll<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Polls `lines` until it gives at least `n` lines; returns them. Panics after `timeout`,
/// saying how many came and what `context` adds (e.g. a receiver's errors).
pub fn wait_lines(
    n: usize,
    timeout: Duration,
    lines: impl Fn() -> Vec<Vec<u8>>,
    context: impl Fn() -> String,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = lines();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} lines arrived{}",
            got.len(),
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (messages received, messages handled to their end) by a collector, from its metrics;
/// None when it serves none.
pub fn collector_messages(collector: &Proc) -> Option<(u64, u64)> {
    let text = collector.metrics_text();
    (!text.is_empty()).then(|| {
        (
            metric_sum(&text, "sluice_messages_received_total", &[]),
            metric_sum(&text, "sluice_messages_total", &[]),
        )
    })
}

/// True when the relay delivered every event it accepted and the test read every line it
/// printed. After a restart the spool's replay can make deliveries outnumber acceptances.
pub fn relay_idle(relay: &Proc) -> bool {
    let text = relay.metrics_text();
    let delivered = metric_sum(&text, "sluice_relay_events_delivered_total", &[]);
    !text.is_empty()
        && metric_sum(&text, "sluice_relay_events_accepted_total", &[]) <= delivered
        && relay.stdout.len() as u64 == delivered
}

/// Waits until nothing more can arrive: the queue holds no message, visible or in flight; the
/// collector handled every message it received (so no task still sends, not even for a
/// redelivered copy); and the relay, when given, printed everything it accepted. Checked
/// twice around the queue's depth, so the three hold at one moment.
pub async fn settled(
    wired: &Wired,
    collector: &Proc,
    relay: Option<&Proc>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let before = collector_messages(collector);
        if before.is_some_and(|(received, handled)| received == handled)
            && wired.depth().await == (0, 0)
            && relay.map_or(true, relay_idle)
            && collector_messages(collector) == before
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
