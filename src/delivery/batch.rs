//! Batch stage: collects tagged events into gzip batches cut by count, bytes and age, and
//! hands each finished batch to the forward stage over a bounded channel.
//!
//! The byte cut comes before the event that would take the batch over `max_bytes`, so a batch
//! never holds more than `max(max_bytes, one line)`: with `max_bytes` and the event cap fitted to
//! the relay's limits at start-up, every batch fits them.
//!
//! Runs on the processor's blocking thread. When the channel is full it blocks, which is the
//! backpressure that slows reading when the relay is slow. A batch never mixes objects: the
//! last batch of an object is sent when the object ends, so confirmations map to objects.

use std::time::Instant;

use sluice_channel::encode::{BatchEncoder, EncodedBatch};
use tokio::sync::mpsc;

use crate::config::BatchSettings;
use sluice_formats::processor::{EventSink, SinkError};

/// The event sink that batches.
pub struct Batcher {
    settings: BatchSettings,
    encoder: Option<(BatchEncoder, Instant)>,
    tx: mpsc::Sender<EncodedBatch>,
    /// Batches handed over so far.
    pub batches: u64,
    /// Events still to drop before batching (a checkpoint says they were confirmed before).
    skip: u64,
    /// Events dropped for the checkpoint so far.
    pub skipped: u64,
}

impl Batcher {
    /// A batcher sending finished batches to `tx`.
    pub fn new(settings: BatchSettings, tx: mpsc::Sender<EncodedBatch>) -> Self {
        Batcher {
            settings,
            encoder: None,
            tx,
            batches: 0,
            skip: 0,
            skipped: 0,
        }
    }

    /// Drops the object's first `events` events instead of batching them: a redelivery
    /// resuming after what the relay already confirmed (processing is deterministic for the
    /// same bytes and spec, so they are the same events).
    pub fn skipping(mut self, events: u64) -> Self {
        self.skip = events;
        self
    }

    /// Sends the open batch, if any.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Some((encoder, _)) = self.encoder.take() {
            if !encoder.is_empty() {
                self.batches += 1;
                self.tx
                    .blocking_send(encoder.finish())
                    .map_err(|_| SinkError("forwarding stopped".into()))?;
            }
        }
        Ok(())
    }
}

impl EventSink for Batcher {
    fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError> {
        if self.skip > 0 {
            self.skip -= 1;
            self.skipped += 1;
            return Ok(());
        }
        // `TAG SP MESSAGE LF`
        let line = (tag.len() + message.len() + 2) as u64;
        if self
            .encoder
            .as_ref()
            .is_some_and(|(e, _)| !e.is_empty() && e.raw_bytes() + line > self.settings.max_bytes)
        {
            self.flush()?;
        }
        let level = self.settings.compression_level;
        let (encoder, started) = self
            .encoder
            .get_or_insert_with(|| (BatchEncoder::new(level), Instant::now()));
        encoder.push(tag, message);
        if encoder.events() >= self.settings.max_events
            || encoder.raw_bytes() >= self.settings.max_bytes
            || started.elapsed() >= self.settings.max_age
        {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cuts_by_count_and_flushes_rest() {
        let (tx, mut rx) = mpsc::channel(10);
        let settings = BatchSettings {
            max_events: 2,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            compression_level: 1,
        };
        let mut b = Batcher::new(settings, tx);
        for _ in 0..5 {
            b.emit("a.b", b"x").unwrap();
        }
        b.flush().unwrap();
        let counts: Vec<u64> =
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.events)).collect();
        assert_eq!(counts, vec![2, 2, 1]);
    }

    #[test]
    fn cuts_before_the_event_that_would_overflow() {
        let (tx, mut rx) = mpsc::channel(100);
        let settings = BatchSettings {
            max_events: 1000,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
            compression_level: 1,
        };
        let mut b = Batcher::new(settings, tx);
        // Lines of 4 + 26 + 1 = 30 bytes: three fit in 100, the fourth would overflow.
        for _ in 0..7 {
            b.emit("a.b", &[b'x'; 25]).unwrap();
        }
        // One line longer than max_bytes goes alone.
        b.emit("a.b", &[b'y'; 300]).unwrap();
        b.emit("a.b", &[b'x'; 25]).unwrap();
        b.flush().unwrap();
        let sizes: Vec<(u64, u64)> =
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| (b.events, b.raw_bytes))).collect();
        assert_eq!(sizes, vec![(3, 90), (3, 90), (1, 30), (1, 305), (1, 30)]);
        for (_, raw) in sizes {
            assert!(raw <= 305, "never over max(max_bytes, one line)");
        }
    }

    #[test]
    fn skips_the_first_events() {
        let (tx, mut rx) = mpsc::channel(10);
        let settings = BatchSettings {
            max_events: 2,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            compression_level: 1,
        };
        let mut b = Batcher::new(settings, tx).skipping(3);
        for _ in 0..5 {
            b.emit("a.b", b"x").unwrap();
        }
        b.flush().unwrap();
        let counts: Vec<u64> =
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.events)).collect();
        assert_eq!((counts, b.skipped), (vec![2], 3));
    }

    #[test]
    fn closed_channel_stops_the_object() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let settings = BatchSettings {
            max_events: 1,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            compression_level: 1,
        };
        let mut b = Batcher::new(settings, tx);
        assert!(b.emit("a.b", b"x").is_err());
    }
}
