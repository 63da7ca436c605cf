//! One object, end to end: fetch it from S3, decompress and split it on a blocking thread,
//! batch the events and forward each batch to the relay, and report the object confirmed
//! only when every batch of it was.
//!
//! A failing object keeps what it delivered: on an error part-way (a truncated gzip, a broken
//! document), the events read before the error are flushed and confirmed before the error is
//! returned, with the count. The ledger's checkpoint (bucket, key, ETag, spec fingerprint →
//! events confirmed), updated per confirmed batch, lets a redelivery skip those events.
//!
//! It never deletes anything and never decides a message's fate: it returns an outcome that
//! says whether a retry could help.
//!
//! Beside it: [`fetch`] (streaming and ranged GetObject) and [`ledger`] (objects already
//! delivered, and checkpoints of part-delivered ones).

pub mod fetch;
pub mod ledger;
pub mod work;

use std::io::BufReader;
use std::sync::Arc;

use tokio::sync::mpsc;

use self::fetch::FetchError;
use self::ledger::Ledger;
use crate::config::BatchSettings;
use crate::delivery::batch::Batcher;
use crate::delivery::forward::{ForwardError, Forwarder};
use sluice_formats::decompress;
use sluice_formats::notification::ObjectRef;
use sluice_formats::processor::{self, ObjectContext, ObjectStats, ProcessError, ProcessorSpec};

/// Read buffer between the download and the decompressor.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Finished batches waiting for the forwarder: the processor blocks beyond this.
const BATCHES_QUEUED: usize = 2;

/// Why an object was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("decompressing: {0}")]
    Decompress(#[from] decompress::DecompressError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("processing thread failed: {0}")]
    Panicked(String),
}

impl ObjectError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ObjectError::Fetch(e) => e.label(),
            ObjectError::Decompress(_) => "decompress",
            ObjectError::Process(_) => "process",
            ObjectError::Forward(ForwardError::Refused(_)) => "refused",
            ObjectError::Forward(ForwardError::Shutdown) => "shutdown",
            ObjectError::Panicked(_) => "panic",
        }
    }

    /// True when the object can never succeed, so retrying the message is pointless for it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ObjectError::Fetch(e) if e.is_missing())
    }

    /// True when the same object will fail the same way on the next receive: its bytes are
    /// bad, S3 refuses it (access denied, archived, no such bucket, another 4xx), or the relay
    /// refuses what they give. Outages (S3 5xx, throttling, timeouts, a relay token being
    /// rotated) are not: they may heal.
    pub fn repeats(&self) -> bool {
        match self {
            ObjectError::Fetch(e) => e.repeats(),
            ObjectError::Decompress(decompress::DecompressError::Read(e)) => {
                !fetch::is_download_failure(e)
            }
            ObjectError::Process(ProcessError::Read { source, .. }) => {
                !fetch::is_download_failure(source)
            }
            // The local disk or the forwarder, not the object.
            ObjectError::Process(ProcessError::Spill { .. } | ProcessError::Sink { .. }) => false,
            ObjectError::Process(_) | ObjectError::Panicked(_) => true,
            ObjectError::Forward(ForwardError::Refused(
                sluice_channel::client::ClientError::Refused { status, .. },
            )) => *status != 401,
            _ => false,
        }
    }
}

/// What the object stage needs besides the object: the input's means and the facts of the
/// message it came in.
pub struct ObjectJob<'a> {
    /// Input name, for logs and metrics.
    pub input: &'a str,
    /// S3 client.
    pub s3: &'a aws_sdk_s3::Client,
    /// Batch cuts.
    pub batch: BatchSettings,
    /// The relay.
    pub forwarder: &'a Arc<Forwarder>,
    /// Download parts.
    pub fetch: &'a fetch::FetchSettings,
    /// Dry run: count batches instead of sending them.
    pub do_not_send: bool,
    /// The SQS message id (for enrichment).
    pub message_id: &'a str,
    /// The message's `SentTimestamp`, ms.
    pub sent_ms: Option<u64>,
    /// The message's `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// Objects already delivered, when the input keeps a ledger.
    pub ledger: Option<&'a Ledger>,
}

/// How far an object got in this attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events the relay confirmed in this attempt.
    pub confirmed: u64,
    /// Events not sent again: the ledger's checkpoint says an earlier attempt had them
    /// confirmed.
    pub skipped: u64,
}

/// An object delivered to its end.
#[derive(Debug)]
pub struct Delivered {
    /// What processing produced.
    pub stats: ObjectStats,
    /// Events confirmed and skipped.
    pub progress: Progress,
}

/// An object that did not reach its end, with what it delivered before the error (flushed and
/// confirmed before this is returned, and checkpointed in the ledger).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    /// Why.
    #[source]
    pub error: ObjectError,
    /// Events confirmed and skipped before the error.
    pub progress: Progress,
    /// What the processor counted before the error (empty when it never ran), so the
    /// anomalies it met are counted too.
    pub stats: ObjectStats,
}

impl From<ObjectError> for Failed {
    fn from(error: ObjectError) -> Self {
        Failed {
            error,
            progress: Progress::default(),
            stats: ObjectStats::default(),
        }
    }
}

impl From<FetchError> for Failed {
    fn from(error: FetchError) -> Self {
        ObjectError::from(error).into()
    }
}

impl ObjectError {
    /// Offset in the decompressed object where it failed, when the error knows it.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ObjectError::Decompress(_) => Some(0),
            ObjectError::Process(e) => match e {
                ProcessError::Read { offset, .. }
                | ProcessError::Sink { offset, .. }
                | ProcessError::Json { offset, .. }
                | ProcessError::Spill { offset, .. }
                | ProcessError::Envelope { offset, .. } => Some(*offset),
                ProcessError::NotParquet { .. } => Some(0),
                ProcessError::SpillTooLarge { .. } | ProcessError::Parquet { .. } => None,
            },
            _ => None,
        }
    }
}

/// A fingerprint of everything that decides how an object's bytes become events: the spec,
/// the forced codec and this build. A checkpoint counts events of one fingerprint only; a
/// config change or an upgrade starts the object over (duplicates, never a gap).
pub fn fingerprint(spec: &ProcessorSpec, hints: &decompress::Hints) -> String {
    use md5::Digest;
    let text = format!(
        "{}|{spec:?}|{}",
        env!("CARGO_PKG_VERSION"),
        hints.force_gzip
    );
    let digest = md5::Md5::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a checkpointed object resumes and is recorded.
struct Checkpoint<'a> {
    ledger: &'a Ledger,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    fingerprint: &'a str,
    /// Events confirmed by earlier attempts, skipped in this one.
    from: u64,
}

/// Processes `object` with `spec` and returns its stats once every batch is confirmed, or
/// None when the ledger says the same version was delivered before. A version the ledger
/// holds a checkpoint for resumes after the events confirmed before.
pub async fn run(
    job: &ObjectJob<'_>,
    object: &ObjectRef,
    spec: &ProcessorSpec,
    hints: decompress::Hints,
) -> Result<Option<Delivered>, Failed> {
    let version = object.version_id.as_deref();
    let (opened, key) = match fetch::open(job.s3, &object.bucket, &object.key, version, job.fetch)
        .await
    {
        Err(FetchError::Missing { .. }) if object.fallback_key.is_some() => {
            let alt = object.fallback_key.clone().unwrap_or_default();
            let opened = fetch::open(job.s3, &object.bucket, &alt, version, job.fetch).await?;
            tracing::info!(bucket = %object.bucket, key = %object.key, used_key = %alt, "key found in its decoded spelling");
            (opened, alt)
        }
        other => (other?, object.key.clone()),
    };
    // The version read, for the ledger: the ETag S3 just gave, else the notification's.
    let etag = opened.etag.clone().or_else(|| object.etag.clone());
    if let (Some(ledger), Some(etag)) = (job.ledger, &etag) {
        if ledger.contains(&object.bucket, &key, etag) {
            return Ok(None);
        }
    }
    let fingerprint = fingerprint(spec, &hints);
    // A dry run confirms nothing, so it neither resumes nor records.
    let checkpoint = match (job.ledger, &etag) {
        (Some(ledger), Some(etag)) if !job.do_not_send => Some(Checkpoint {
            ledger,
            bucket: &object.bucket,
            key: &key,
            etag,
            fingerprint: &fingerprint,
            from: ledger.checkpoint(&object.bucket, &key, etag, &fingerprint),
        }),
        _ => None,
    };
    let hints = decompress::Hints {
        content_encoding: opened.content_encoding.clone(),
        ..hints
    };
    let (body_tx, reader) = fetch::body_channel();
    let pump = tokio::spawn(fetch::pump(
        opened,
        job.s3.clone(),
        object.bucket.clone(),
        key.clone(),
        job.fetch.clone(),
        body_tx,
    ));
    let run = Split {
        job,
        spec,
        hints,
        bucket: &object.bucket,
        key: &key,
        pump: Some(&pump),
        checkpoint: checkpoint.as_ref(),
    };
    let result = run.forward(reader).await;
    pump.abort();
    let delivered = result?;
    if let Some(cp) = &checkpoint {
        // Only after every batch was confirmed.
        cp.ledger
            .record(cp.bucket, cp.key, cp.etag, Some(cp.fingerprint));
    }
    Ok(Some(delivered))
}

/// Processes an SQS body itself as the object (direct mode): `bucket` and `key` are empty.
pub async fn run_body(
    job: &ObjectJob<'_>,
    body: bytes::Bytes,
    spec: &ProcessorSpec,
    hints: decompress::Hints,
) -> Result<Delivered, Failed> {
    let (body_tx, reader) = fetch::body_channel();
    // The channel holds several chunks, so this one send never waits.
    let _ = body_tx.send(Ok(body)).await;
    drop(body_tx);
    let run = Split {
        job,
        spec,
        hints,
        bucket: "",
        key: "",
        pump: None,
        checkpoint: None,
    };
    run.forward(reader).await
}

/// One run of decompress → processor → batch → forward over an object's bytes.
struct Split<'a, 'j> {
    job: &'a ObjectJob<'j>,
    spec: &'a ProcessorSpec,
    hints: decompress::Hints,
    bucket: &'a str,
    key: &'a str,
    /// Feeds the reader: stopped when forwarding fails, so a stalled download cannot hold
    /// the failure up.
    pump: Option<&'a tokio::task::JoinHandle<()>>,
    /// Resume point and ledger, when the object version has one.
    checkpoint: Option<&'a Checkpoint<'a>>,
}

impl Split<'_, '_> {
    /// Runs the blocking stages on a blocking thread over `reader` and forwards every batch;
    /// returns when all are confirmed or something failed. On a processing error part-way,
    /// the events read before it are batched, confirmed and checkpointed first.
    async fn forward(self, reader: fetch::ChunkReader) -> Result<Delivered, Failed> {
        let job = self.job;
        let (batch_tx, mut batch_rx) = mpsc::channel(BATCHES_QUEUED);
        let from = self.checkpoint.map_or(0, |c| c.from);
        let split = self.spawn_split(reader, batch_tx, from);

        // Confirm batches as they come. On the first failure stop reading batches: the
        // blocking side then fails its next send and stops, instead of splitting an object
        // nobody takes.
        let mut forward_error = None;
        let mut confirmed = 0u64;
        while let Some(batch) = batch_rx.recv().await {
            if job.do_not_send {
                crate::telemetry::events_not_sent(job.input, batch.events);
                continue;
            }
            if let Err(e) = job
                .forwarder
                .deliver_with(job.input, self.spec.oversize, &batch)
                .await
            {
                forward_error = Some(e);
                if let Some(pump) = self.pump {
                    pump.abort();
                }
                break;
            }
            confirmed += batch.events;
            if let Some(cp) = self.checkpoint {
                // Batches go out in order, so the first `from + confirmed` events are in.
                cp.ledger.set_checkpoint(
                    cp.bucket,
                    cp.key,
                    cp.etag,
                    cp.fingerprint,
                    from + confirmed,
                );
            }
        }
        drop(batch_rx);
        let (result, skipped, counted) = match split.await {
            Ok(done) => done,
            Err(join) => (
                Err(ObjectError::Panicked(join.to_string())),
                0,
                ObjectStats::default(),
            ),
        };
        let progress = Progress { confirmed, skipped };
        if let Some(e) = forward_error {
            return Err(Failed {
                error: e.into(),
                progress,
                stats: counted,
            });
        }
        match result {
            Ok(stats) => Ok(Delivered { stats, progress }),
            Err(error) => Err(Failed {
                error,
                progress,
                stats: counted,
            }),
        }
    }

    /// Starts decompress → processor → batch on a blocking thread. It returns the outcome
    /// and the events skipped for the checkpoint.
    fn spawn_split(
        &self,
        reader: fetch::ChunkReader,
        batch_tx: mpsc::Sender<sluice_channel::encode::EncodedBatch>,
        from: u64,
    ) -> tokio::task::JoinHandle<(Result<ObjectStats, ObjectError>, u64, ObjectStats)> {
        let spec = self.spec.clone();
        let hints = self.hints.clone();
        let settings = self.job.batch;
        let (bucket, key) = (self.bucket.to_string(), self.key.to_string());
        let message_id = self.job.message_id.to_string();
        let (sent_ms, receive_count) = (self.job.sent_ms, self.job.receive_count);
        tokio::task::spawn_blocking(move || {
            let mut batcher = Batcher::new(settings, batch_tx).skipping(from);
            let mut counted = ObjectStats::default();
            let result = (|| {
                let input = Box::new(BufReader::with_capacity(READ_BUF_BYTES, reader));
                let (_codec, mut input) = decompress::open(input, &hints)?;
                let ctx = ObjectContext::new(&bucket, &key).with_message(
                    Some(&message_id),
                    sent_ms,
                    Some(receive_count),
                );
                let (processed, stats) =
                    processor::process_counted(&mut input, &spec, &ctx, &mut batcher);
                counted = stats.clone();
                // Flushed whether processing ended or failed: the events read before an
                // error are good ones, and they go out (once) before the error is reported.
                let flushed = batcher.flush();
                processed?;
                flushed.map_err(|source| ProcessError::Sink {
                    offset: stats.bytes_in,
                    source,
                })?;
                Ok(stats)
            })();
            (result, batcher.skipped, counted)
        })
    }
}
