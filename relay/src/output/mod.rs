//! Delivery: one task per configured output reads that output's spool cursor in log order and
//! hands batches to its workers (one per connection; one for stdout and file). A worker frames
//! the batch (frame.rs), waits for the rate limit (limit.rs), writes it and flushes
//! (worker.rs). A batch is *done* when it is confirmed: for stdout and file once flushed; for
//! the network outputs once the connection it was written on was closed gracefully and the
//! peer answered the close (confirm.rs). A batch written on a connection that ends any other
//! way is resent, so duplicates are possible, loss is not. Batches complete out of order
//! across workers and connections; the cursor (and so the spool) moves only over the
//! contiguous prefix that is done.
//!
//! It does not accept batches (ingest.rs) and does not decide what the spool keeps (spool.rs).

pub(crate) mod confirm;
pub(crate) mod danger;
pub mod frame;
pub(crate) mod net;
pub(crate) mod stream;
pub(crate) mod tls;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{OutputKind, OutputSettings};
use crate::limit::RateLimit;
use crate::metrics::{Metrics, Phase};
use crate::spool::{Position, SpoolReader, StoredBatch};
use frame::Framer;
use net::NetSink;
use stream::StreamSink;
pub use tls::TlsConfigError;

/// Why a delivery attempt failed; every variant names where and in which phase.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write to {dest} failed: {source}")]
    Write {
        dest: String,
        source: std::io::Error,
    },
    #[error("batch {key} cannot be decoded: {reason}")]
    Decode { key: String, reason: String },
    #[error("connect: cannot resolve {address}: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to {address} failed: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to {address} timed out after {after:?}")]
    ConnectTimeout { address: String, after: Duration },
    #[error("TLS handshake with {address} failed: {reason}")]
    Handshake { address: String, reason: String },
    #[error("TLS handshake with {address} timed out after {after:?}")]
    HandshakeTimeout { address: String, after: Duration },
    #[error("write to {dest} timed out after {after:?}")]
    WriteTimeout { dest: String, after: Duration },
    #[error("connection to {dest} ended: {reason}")]
    Peer {
        dest: String,
        why: crate::metrics::ConfirmFailure,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
}

impl OutputError {
    /// The phase, for metrics.
    pub(crate) fn phase(&self) -> Phase {
        match self {
            OutputError::Open { .. }
            | OutputError::Resolve { .. }
            | OutputError::Connect { .. }
            | OutputError::ConnectTimeout { .. }
            | OutputError::Tls(_) => Phase::Connect,
            OutputError::Handshake { .. } | OutputError::HandshakeTimeout { .. } => {
                Phase::Handshake
            }
            OutputError::Write { .. }
            | OutputError::WriteTimeout { .. }
            | OutputError::Peer { .. } => Phase::Write,
            OutputError::Decode { .. } => Phase::Decode,
        }
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next wait: a random duration between half and all of `min(max, initial * 2^n)`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + Duration::from_nanos(fastrand::u64(0..=(exp - half).as_nanos() as u64))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Where a worker writes.
pub(crate) enum Sink {
    Stream(StreamSink),
    Net(Box<NetSink>),
}

impl Sink {
    async fn write_all(&mut self, data: &[u8]) -> Result<(), OutputError> {
        match self {
            Sink::Stream(s) => s.write_all(data).await,
            Sink::Net(n) => n.write_all(data).await,
        }
    }
    async fn flush(&mut self) -> Result<(), OutputError> {
        match self {
            Sink::Stream(s) => s.flush().await,
            Sink::Net(n) => n.flush().await,
        }
    }
    async fn before_batch(&mut self) -> Result<(), OutputError> {
        match self {
            Sink::Stream(_) => Ok(()),
            Sink::Net(n) => n.before_batch().await,
        }
    }
}

/// Bytes framed per write.
const CHUNK: usize = 64 * 1024;

/// What a successful delivery sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sent {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
}

/// A batch written on a connection, held (its body is a cheap `Bytes` clone) until that
/// connection is confirmed or fails.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// The batch's place in the output's order (`run`'s sequence number).
    pub(crate) seq: u64,
    pub(crate) batch: StoredBatch,
    pub(crate) sent: Sent,
}

/// One worker's state: its sink, its framer and the output's shared rate limit.
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) sink: Sink,
    pub(crate) framer: Framer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limit: Option<Arc<RateLimit>>,
}

impl Worker {
    /// Writes one whole batch and flushes it (for a network output: hands it to the socket;
    /// delivery is confirmed later, by the connection's close).
    pub(crate) async fn deliver(&mut self, batch: &StoredBatch) -> Result<Sent, OutputError> {
        self.sink.before_batch().await?;
        let mut frames = self.framer.batch(&batch.body);
        let mut out = Vec::with_capacity(CHUNK + 4096);
        let mut sent = Sent::default();
        loop {
            out.clear();
            let stats = frames
                .next_chunk(&mut out, CHUNK)
                .map_err(|e| OutputError::Decode {
                    key: batch.key.clone(),
                    reason: e.to_string(),
                })?;
            let Some(stats) = stats else { break };
            if let Some(limit) = &self.limit {
                if limit.acquire(stats.events, out.len() as u64).await {
                    self.metrics.output(&self.name).rate_limited_waits.inc();
                }
            }
            self.sink.write_all(&out).await?;
            sent.events += stats.events;
            sent.bytes += out.len() as u64;
        }
        self.sink.flush().await?;
        Ok(sent)
    }
}

/// Builds the sinks of an output: one per worker (one per pooled connection).
fn sinks(settings: &OutputSettings, metrics: &Arc<Metrics>) -> Result<Vec<Sink>, OutputError> {
    Ok(match &settings.kind {
        OutputKind::Stdout => vec![Sink::Stream(StreamSink::stdout())],
        OutputKind::File { path } => vec![Sink::Stream(StreamSink::file(path.clone()))],
        OutputKind::Net(net) => {
            let tls = match &net.tls {
                Some(t) => Some(tls::client(t)?),
                None => None,
            };
            let net = Arc::new((**net).clone());
            (0..net.connections)
                .map(|_| {
                    Sink::Net(Box::new(NetSink::new(
                        settings.name.clone(),
                        net.clone(),
                        tls.clone(),
                        metrics.clone(),
                    )))
                })
                .collect()
        }
    })
}

/// Starts delivering output `settings` from `reader` until `stop`.
pub(crate) fn spawn(
    settings: OutputSettings,
    reader: SpoolReader,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, OutputError> {
    let sinks = sinks(&settings, &metrics)?;
    let limit = RateLimit::new(&settings.rate);
    let workers: Vec<Worker> = sinks
        .into_iter()
        .map(|sink| Worker {
            name: settings.name.clone(),
            sink,
            framer: Framer::new(&settings.framing),
            metrics: metrics.clone(),
            limit: limit.clone(),
        })
        .collect();
    Ok(tokio::spawn(run(settings, reader, workers, stop)))
}

type Job = (u64, StoredBatch);

async fn run(
    settings: OutputSettings,
    mut reader: SpoolReader,
    workers: Vec<Worker>,
    stop: CancellationToken,
) {
    let name = settings.name.clone();
    let acker = reader.acker();
    let (job_tx, job_rx) = mpsc::channel::<Job>(workers.len());
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Position)>();
    let mut handles = Vec::new();
    for worker in workers {
        handles.push(tokio::spawn(worker::work(
            worker,
            settings.clone(),
            job_rx.clone(),
            done_tx.clone(),
            stop.clone(),
        )));
    }
    drop(done_tx);
    tracing::info!(output = %name, kind = %settings.type_name, from = %reader.position(), "output started");

    // In-order completion: the cursor moves over the contiguous prefix of finished jobs.
    let mut next_seq = 0u64;
    let mut next_done = 0u64;
    let mut finished: BTreeMap<u64, Position> = BTreeMap::new();
    let mut advance = |seq: u64, pos: Position, finished: &mut BTreeMap<u64, Position>| {
        finished.insert(seq, pos);
        let mut last = None;
        while let Some(p) = finished.remove(&next_done) {
            last = Some(p);
            next_done += 1;
        }
        if let Some(p) = last {
            acker.ack(p);
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some((seq, pos)) = done_rx.recv() => advance(seq, pos, &mut finished),
            batch = reader.next() => match batch {
                Ok(batch) => {
                    let job = (next_seq, batch);
                    next_seq += 1;
                    // Waits while every worker is busy: the reader never runs far ahead.
                    let sent = tokio::select! {
                        r = job_tx.send(job) => r.is_ok(),
                        _ = stop.cancelled() => false,
                    };
                    if !sent {
                        break;
                    }
                    // Take completions that arrived meanwhile.
                    while let Ok((seq, pos)) = done_rx.try_recv() {
                        advance(seq, pos, &mut finished);
                    }
                }
                Err(e) => {
                    tracing::error!(output = %name, error = %e, "spool read failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            },
        }
    }
    drop(job_tx);
    // Workers finish the batch they hold (a failing one gives up at once on stop) and close
    // their connections gracefully, confirming what the peer confirms.
    while let Some((seq, pos)) = done_rx.recv().await {
        advance(seq, pos, &mut finished);
    }
    for h in handles {
        let _ = h.await;
    }
    tracing::info!(output = %name, "output stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(1) && *d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
