//! One object, end to end: fetch it from S3, decompress and split it on a blocking thread,
//! batch the events and forward each batch to the relay, and report the object confirmed
//! only when every batch of it was.
//!
//! It never deletes anything and never decides a message's fate: it returns an outcome that
//! says whether a retry could help.

use std::io::BufReader;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::batch::Batcher;
use crate::config::BatchSettings;
use crate::decompress;
use crate::fetch::{self, FetchError};
use crate::forward::{ForwardError, Forwarder};
use crate::notification::ObjectRef;
use crate::processor::{self, ObjectContext, ObjectStats, ProcessError, ProcessorSpec};

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
        matches!(self, ObjectError::Fetch(FetchError::Missing))
    }

    /// True when the same object will fail the same way on the next receive: its bytes are
    /// bad, or the relay refuses what they give. Outages (S3 errors, access denied while a
    /// policy propagates, a relay token being rotated) are not: they may heal.
    pub fn repeats(&self) -> bool {
        match self {
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
                sluice_relay::client::ClientError::Refused { status, .. },
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
    pub ledger: Option<&'a crate::ledger::Ledger>,
}

/// Processes `object` with `spec` and returns its stats once every batch is confirmed, or
/// None when the ledger says the same version was delivered before.
pub async fn run(
    job: &ObjectJob<'_>,
    object: &ObjectRef,
    spec: &ProcessorSpec,
    hints: decompress::Hints,
) -> Result<Option<ObjectStats>, ObjectError> {
    let version = object.version_id.as_deref();
    let (opened, key) = match fetch::open(job.s3, &object.bucket, &object.key, version, job.fetch)
        .await
    {
        Err(FetchError::Missing) if object.fallback_key.is_some() => {
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
    let result =
        split_and_forward(job, spec, hints, &object.bucket, &key, reader, Some(&pump)).await;
    pump.abort();
    let stats = result?;
    if let (Some(ledger), Some(etag)) = (job.ledger, &etag) {
        // Only after every batch was confirmed, and never in a dry run.
        if !job.do_not_send {
            ledger.record(&object.bucket, &key, etag);
        }
    }
    Ok(Some(stats))
}

/// Processes an SQS body itself as the object (direct mode): `bucket` and `key` are empty.
pub async fn run_body(
    job: &ObjectJob<'_>,
    body: bytes::Bytes,
    spec: &ProcessorSpec,
    hints: decompress::Hints,
) -> Result<ObjectStats, ObjectError> {
    let (body_tx, reader) = fetch::body_channel();
    // The channel holds several chunks, so this one send never waits.
    let _ = body_tx.send(Ok(body)).await;
    drop(body_tx);
    split_and_forward(job, spec, hints, "", "", reader, None).await
}

/// Runs decompress → processor → batch on a blocking thread over `reader`, and forwards
/// every batch; returns when all are confirmed or something failed. `pump` feeds `reader`:
/// it is stopped when forwarding fails, so a stalled download cannot hold the failure up.
async fn split_and_forward(
    job: &ObjectJob<'_>,
    spec: &ProcessorSpec,
    hints: decompress::Hints,
    bucket: &str,
    key: &str,
    reader: fetch::ChunkReader,
    pump: Option<&tokio::task::JoinHandle<()>>,
) -> Result<ObjectStats, ObjectError> {
    let (batch_tx, mut batch_rx) = mpsc::channel(BATCHES_QUEUED);
    // A batch the relay refuses is re-split by this rule (forward.rs).
    let oversize = spec.oversize;
    let spec = spec.clone();
    let settings = job.batch;
    let (bucket, key) = (bucket.to_string(), key.to_string());
    let message_id = job.message_id.to_string();
    let (sent_ms, receive_count) = (job.sent_ms, job.receive_count);
    let split = tokio::task::spawn_blocking(move || -> Result<ObjectStats, ObjectError> {
        let input = Box::new(BufReader::with_capacity(READ_BUF_BYTES, reader));
        let (_codec, mut input) = decompress::open(input, &hints)?;
        let mut batcher = Batcher::new(settings, batch_tx);
        let ctx = ObjectContext::new(&bucket, &key).with_message(
            Some(&message_id),
            sent_ms,
            Some(receive_count),
        );
        let stats = processor::process(&mut input, &spec, &ctx, &mut batcher)?;
        batcher.flush().map_err(|source| ProcessError::Sink {
            offset: stats.bytes_in,
            source,
        })?;
        Ok(stats)
    });

    // Confirm batches as they come. On the first failure stop reading batches: the blocking
    // side then fails its next send and stops, instead of splitting an object nobody takes.
    let mut forward_error = None;
    while let Some(batch) = batch_rx.recv().await {
        if job.do_not_send {
            crate::metrics::count(
                "sluice_events_not_sent_total",
                "Events a do_not_send input processed and did not send",
                &[("input", job.input)],
                batch.events,
            );
            continue;
        }
        if let Err(e) = job
            .forwarder
            .deliver_with(job.input, oversize, &batch)
            .await
        {
            forward_error = Some(e);
            if let Some(pump) = pump {
                pump.abort();
            }
            break;
        }
    }
    drop(batch_rx);
    let split = split.await;
    if let Some(e) = forward_error {
        return Err(e.into());
    }
    match split {
        Ok(result) => result,
        Err(join) => Err(ObjectError::Panicked(join.to_string())),
    }
}
