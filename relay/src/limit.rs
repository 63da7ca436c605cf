//! Per-output rate limits (`max_events_per_sec`, `max_bytes_per_sec`, with bursts) on
//! governor's GCRA, shared by every connection of the output.
//!
//! The limiter's clock is tokio's (`tokio::time::Instant`), and waits are tokio sleeps, so
//! tests can run it on a paused clock; governor's own async waits use a wall-clock timer,
//! which is why they are not used. It does no I/O.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::RateSettings;

/// Governor clock on tokio time: the elapsed time since the limiter was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.start)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Bucket {
    limiter: Limiter,
    burst: u32,
}

/// An output's rate limit. Cheap to share behind an `Arc`.
pub(crate) struct RateLimit {
    clock: TokioClock,
    events: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl RateLimit {
    /// `None` when the output has no limit.
    pub(crate) fn new(rate: &RateSettings) -> Option<Arc<RateLimit>> {
        if rate.max_events_per_sec.is_none() && rate.max_bytes_per_sec.is_none() {
            return None;
        }
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let bucket = |per_sec: Option<u32>, burst: Option<u32>| {
            let per_sec = NonZeroU32::new(per_sec?)?;
            // Default burst: one second's worth.
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(per_sec);
            Some(Bucket {
                limiter: RateLimiter::direct_with_clock(
                    Quota::per_second(per_sec).allow_burst(burst),
                    clock,
                ),
                burst: burst.get(),
            })
        };
        Some(Arc::new(RateLimit {
            clock,
            events: bucket(rate.max_events_per_sec, rate.burst_events),
            bytes: bucket(rate.max_bytes_per_sec, rate.burst_bytes),
        }))
    }

    /// Waits until `events` events and `bytes` bytes may be sent. True when it had to wait.
    pub(crate) async fn acquire(&self, events: u64, bytes: u64) -> bool {
        let mut waited = false;
        if let Some(b) = &self.events {
            waited |= self.take(b, events).await;
        }
        if let Some(b) = &self.bytes {
            waited |= self.take(b, bytes).await;
        }
        waited
    }

    async fn take(&self, bucket: &Bucket, mut n: u64) -> bool {
        let mut waited = false;
        while n > 0 {
            // A request larger than the burst can never pass whole: take it in bursts.
            let step = n.min(bucket.burst as u64) as u32;
            let Some(step_nz) = NonZeroU32::new(step) else {
                break;
            };
            loop {
                match bucket.limiter.check_n(step_nz) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        waited = true;
                        let wait = not_until.wait_time_from(self.clock.now());
                        tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
                    }
                    // step <= burst, so capacity always suffices; stop rather than spin.
                    Err(_) => break,
                }
            }
            n -= step as u64;
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(events: Option<u32>, bytes: Option<u32>, burst_events: Option<u32>) -> RateSettings {
        RateSettings {
            max_events_per_sec: events,
            max_bytes_per_sec: bytes,
            burst_events,
            burst_bytes: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_per_second_within_ten_percent() {
        let limit = RateLimit::new(&rate(Some(1000), None, Some(100))).unwrap();
        let start = tokio::time::Instant::now();
        // 5,000 events in chunks of 37, as framed chunks would come.
        let mut sent = 0u64;
        while sent < 5_000 {
            limit.acquire(37, 0).await;
            sent += 37;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = sent as f64 / secs;
        assert!(
            (900.0..=1100.0).contains(&rate),
            "{rate} events/s over {secs} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_per_second_with_chunks_larger_than_the_burst() {
        let limit = RateLimit::new(&rate(None, Some(100_000), None)).unwrap();
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            limit.acquire(0, 65_536 * 2).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = 10.0 * 65_536.0 * 2.0 / secs;
        assert!(
            (90_000.0..=110_000.0 * 1.2).contains(&rate),
            "{rate} B/s over {secs} s"
        );
        // The first burst (one second's worth) is free; the rest paced.
        assert!(secs > 11.0 && secs < 13.5, "{secs}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_limiter() {
        assert!(RateLimit::new(&rate(None, None, None)).is_none());
    }
}
