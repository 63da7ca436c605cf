//! Batch stage: collects tagged events into gzip batches cut by count, bytes and age, and
//! hands each finished batch to the forward stage over a bounded channel.
//!
//! Runs on the processor's blocking thread. When the channel is full it blocks, which is the
//! backpressure that slows reading when the relay is slow. A batch never mixes objects: the
//! last batch of an object is sent when the object ends, so confirmations map to objects.

use std::time::Instant;

use sluice_relay::protocol::{BatchEncoder, EncodedBatch};
use tokio::sync::mpsc;

use crate::config::BatchSettings;
use crate::processor::{EventSink, SinkError};

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
