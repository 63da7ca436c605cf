//! Fetch stage: reads an S3 object with GetObject and streams it, in order, to a blocking
//! reader that the decompress and processor stages run on.
//!
//! Small objects are one streaming GET. Objects larger than one part are read as ranged GETs
//! of `part_size` bytes, several at once, pinned to the first answer's ETag (so every part
//! comes from the same version), and fed to the reader in order: a multi-GB object downloads
//! at several times the speed of one stream. Memory is bounded by the process-wide part
//! permits × part size, plus the reader's small chunk channel. A part that breaks is fetched
//! again (a few times); the whole object fails only when a part keeps failing.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::AbortOnDropHandle;

/// Chunks buffered between the download and the processor.
const PUMP_CHUNKS: usize = 8;
/// Size of the slices a downloaded part is handed to the reader in.
const SLICE_BYTES: usize = 64 * 1024;
/// Attempts per ranged part (the SDK retries requests; this covers bodies that break).
const PART_ATTEMPTS: u32 = 3;

/// Why an object could not be fetched, in the three classes that decide the message's fate
/// (README, "S3 errors"): gone for good, refused in a way that repeats, or an outage.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object or the announced version no longer exists (`NoSuchKey`, `NoSuchVersion`):
    /// deleted after the notification, or a wrong key. It will never appear.
    #[error("object not found ({code})")]
    Missing { code: &'static str },
    /// S3 refuses this object and will refuse it again (`AccessDenied`, `InvalidObjectState`
    /// for an archived object, `NoSuchBucket`, any other 4xx): counts toward poison.
    #[error("GetObject refused: {description}")]
    Refused {
        /// The outcome label: `access_denied`, `archived`, `no_such_bucket` or `s3_refused`.
        label: &'static str,
        description: String,
    },
    /// An outage that may heal (5xx, throttling, timeouts, connection errors): retried,
    /// never poison.
    #[error("GetObject failed: {0}")]
    Transient(String),
}

impl FetchError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Missing { .. } => "missing",
            FetchError::Refused { label, .. } => label,
            FetchError::Transient(_) => "fetch",
        }
    }

    /// True when the object is gone for good.
    pub fn is_missing(&self) -> bool {
        matches!(self, FetchError::Missing { .. })
    }

    /// True when the next receive will be refused the same way.
    pub fn repeats(&self) -> bool {
        matches!(self, FetchError::Refused { .. })
    }
}

/// How objects are downloaded.
#[derive(Clone)]
pub struct FetchSettings {
    /// Bytes per ranged GET; objects up to this size are one GET.
    pub part_size: u64,
    /// Ranged GETs in flight per object.
    pub parallel_parts: usize,
    /// Process-wide cap on parts held in memory (downloading or waiting their turn).
    pub part_permits: Arc<Semaphore>,
}

/// The download broke (as opposed to the bytes being bad): carried inside the `io::Error`
/// the reader returns, so later stages can tell an outage from a corrupt object.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DownloadBroke(pub String);

fn broke(reason: String) -> std::io::Error {
    std::io::Error::other(DownloadBroke(reason))
}

/// True when `e` (or what it wraps) is a broken download rather than bad bytes.
pub fn is_download_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DownloadBroke>())
}

/// An opened object: its metadata and the stream of its first part.
pub struct OpenedObject {
    /// `Content-Encoding`, if S3 has one.
    pub content_encoding: Option<String>,
    /// Whole object size, when S3 said.
    pub total_size: Option<u64>,
    /// ETag of the version being read.
    pub etag: Option<String>,
    /// Bytes covered by `body` (the first part, or the whole object).
    pub first_len: Option<u64>,
    /// The body of the first request.
    pub body: ByteStream,
}

/// Error codes S3 answers with a 4xx status that still mean "try again later": the request
/// or the credentials expired, the clock drifted, or S3 asks to slow down.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestLimitExceeded",
];

fn classify(err: aws_sdk_s3::error::SdkError<GetObjectError>) -> FetchError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&err).map(str::to_string);
    let code = match err.as_service_error() {
        Some(GetObjectError::NoSuchKey(_)) => Some("NoSuchKey".to_string()),
        Some(GetObjectError::InvalidObjectState(_)) => Some("InvalidObjectState".to_string()),
        _ => code,
    };
    classify_answer(status, code.as_deref(), crate::queue::aws::describe(&err))
}

/// The class of an S3 answer from its HTTP status and error code (None for both when no
/// answer came: a timeout or a connection error).
fn classify_answer(status: Option<u16>, code: Option<&str>, description: String) -> FetchError {
    let refused = |label| FetchError::Refused {
        label,
        description: description.clone(),
    };
    match (status, code) {
        // Only these two mean the object is gone for good. Any other 404 (NoSuchBucket, a
        // wrong endpoint, a proxy) is a configuration problem that must stay visible, or one
        // mistake would skip every object of the queue.
        (_, Some("NoSuchKey")) => FetchError::Missing { code: "NoSuchKey" },
        (_, Some("NoSuchVersion")) => FetchError::Missing {
            code: "NoSuchVersion",
        },
        (_, Some(code)) if TRANSIENT_CODES.contains(&code) => FetchError::Transient(description),
        // Archived in Glacier / Deep Archive: readable only after a restore nobody asked for.
        (_, Some("InvalidObjectState")) => refused("archived"),
        (_, Some("AccessDenied")) | (Some(403), _) => refused("access_denied"),
        (_, Some("NoSuchBucket")) => refused("no_such_bucket"),
        // 408 and 429 are timeouts and throttling; 412 is a ranged part pinned to an ETag
        // the key no longer has (overwritten mid-read): the next receive reads the new one.
        (Some(408 | 412 | 429), _) => FetchError::Transient(description),
        (Some(400..=499), _) => refused("s3_refused"),
        // 5xx, and no answer at all (timeouts, connection errors).
        _ => FetchError::Transient(description),
    }
}

/// `bytes 0-99/1234` → 1234.
fn total_from_content_range(range: &str) -> Option<u64> {
    range.rsplit('/').next()?.trim().parse().ok()
}

/// Opens `bucket`/`key`: one GET of its first part.
pub async fn open(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    settings: &FetchSettings,
) -> Result<OpenedObject, FetchError> {
    // The announced version, when the notification names one: a later overwrite of the key
    // must not replace the events of this one.
    let ranged = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_string))
        .range(format!("bytes=0-{}", settings.part_size.saturating_sub(1)))
        .send()
        .await;
    let out = match ranged {
        Ok(out) => out,
        // An empty object has no byte 0: S3 answers 416 to any range. Read it plainly.
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await
            .map_err(classify)?,
        Err(e) => return Err(classify(e)),
    };
    let total_size = out
        .content_range()
        .and_then(total_from_content_range)
        .or_else(|| out.content_length().map(|l| l as u64));
    Ok(OpenedObject {
        content_encoding: out.content_encoding().map(str::to_string),
        total_size,
        etag: out.e_tag().map(str::to_string),
        first_len: out.content_length().map(|l| l as u64),
        body: out.body,
    })
}

/// Copies `body` into the channel until it ends, fails or the reader goes away. Returns the
/// bytes sent, or None when the reader went away or the body broke (the error was sent).
async fn stream_body(
    mut body: ByteStream,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    offset: u64,
) -> Option<u64> {
    let mut sent = 0u64;
    loop {
        match body.next().await {
            None => return Some(sent),
            Some(Ok(chunk)) => {
                sent += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return None;
                }
            }
            Some(Err(e)) => {
                let at = offset + sent;
                let _ = tx
                    .send(Err(broke(format!("S3 body broke at byte {at}: {e}"))))
                    .await;
                return None;
            }
        }
    }
}

/// One ranged part, read whole into memory (bounded by the part permit it holds).
async fn fetch_part(
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    etag: Option<String>,
    start: u64,
    end: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), String> {
    let mut last = String::new();
    for attempt in 1..=PART_ATTEMPTS {
        let mut request = s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .range(format!("bytes={start}-{end}"));
        if let Some(etag) = &etag {
            // Pins every part to the version the first part came from.
            request = request.if_match(etag);
        }
        match request.send().await {
            Ok(out) => match out.body.collect().await {
                Ok(data) => {
                    let data = data.into_bytes();
                    if data.len() as u64 == end - start + 1 {
                        return Ok((data, permit));
                    }
                    last = format!("part {start}-{end} came back with {} bytes", data.len());
                }
                Err(e) => last = format!("part {start}-{end} body: {e}"),
            },
            Err(e) => {
                let e = classify(e);
                last = format!("part {start}-{end}: {e}");
                if !matches!(e, FetchError::Transient(_)) {
                    break;
                }
            }
        }
        tracing::debug!(bucket = %bucket, key = %key, attempt, error = %last, "part failed, retrying");
        tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(last)
}

/// Streams the whole object to `tx`: the first part's body as it comes, then the remaining
/// parts fetched `parallel_parts` at a time and sent in order.
pub async fn pump(
    opened: OpenedObject,
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    settings: FetchSettings,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let first_len = opened.first_len;
    let Some(sent) = stream_body(opened.body, &tx, 0).await else {
        return;
    };
    let total = match opened.total_size {
        Some(total) if total > sent => total,
        _ => return,
    };
    if first_len.is_some_and(|l| l != sent) {
        let _ = tx
            .send(Err(broke(format!(
                "first part ended after {sent} bytes, expected {first_len:?}"
            ))))
            .await;
        return;
    }
    let mut next = sent;
    let mut pending: VecDeque<AbortOnDropHandle<Result<(Bytes, _), String>>> = VecDeque::new();
    loop {
        while pending.len() < settings.parallel_parts.max(1) && next < total {
            // Wait for a permit only when holding none: a pump that waited while its own
            // finished parts held permits could deadlock with another object doing the same.
            let permit = if pending.is_empty() {
                match settings.part_permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            } else {
                match settings.part_permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let end = (next + settings.part_size).min(total) - 1;
            pending.push_back(AbortOnDropHandle::new(tokio::spawn(fetch_part(
                s3.clone(),
                bucket.clone(),
                key.clone(),
                opened.etag.clone(),
                next,
                end,
                permit,
            ))));
            next = end + 1;
        }
        let Some(part) = pending.pop_front() else {
            return;
        };
        match part.await {
            Ok(Ok((data, permit))) => {
                // Hand the part over in small slices, holding its permit until the last one
                // is queued: the reader's channel then holds a few slices, not whole parts,
                // and parts in memory stay within the permits (plus the one being handed).
                let mut rest = data;
                while !rest.is_empty() {
                    let slice = rest.split_to(rest.len().min(SLICE_BYTES));
                    if tx.send(Ok(slice)).await.is_err() {
                        return;
                    }
                }
                drop(permit);
            }
            Ok(Err(e)) => {
                let _ = tx.send(Err(broke(e))).await;
                return;
            }
            Err(join) => {
                let _ = tx.send(Err(broke(format!("part task: {join}")))).await;
                return;
            }
        }
    }
}

/// A channel of downloaded chunks fed by [`pump`], and the blocking reader over it.
pub fn body_channel() -> (mpsc::Sender<std::io::Result<Bytes>>, ChunkReader) {
    let (tx, rx) = mpsc::channel(PUMP_CHUNKS);
    (
        tx,
        ChunkReader {
            rx,
            current: Bytes::new(),
        },
    )
}

/// A blocking `Read` over chunks from an async producer. Must run outside the async runtime
/// (in `spawn_blocking`), since it blocks on the channel.
pub struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_follows_chunks_and_errors() {
        let (tx, mut reader) = body_channel();
        tx.try_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"c"))).unwrap();
        tx.try_send(Err(std::io::Error::other("boom"))).unwrap();
        drop(tx);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
        assert_eq!(reader.read(&mut buf).unwrap(), 1);
        assert!(reader.read(&mut buf).is_err());
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata, SdkError};
    use aws_sdk_s3::primitives::SdkBody;

    /// The error the SDK returns for an S3 answer with this status and error code.
    fn answer(status: u16, code: &str) -> SdkError<GetObjectError, HttpResponse> {
        let error = match code {
            "NoSuchKey" => {
                GetObjectError::NoSuchKey(aws_sdk_s3::types::error::NoSuchKey::builder().build())
            }
            "InvalidObjectState" => GetObjectError::InvalidObjectState(
                aws_sdk_s3::types::error::InvalidObjectState::builder().build(),
            ),
            _ => GetObjectError::generic(ErrorMetadata::builder().code(code).build()),
        };
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(error, raw)
    }

    fn class(e: &FetchError) -> (&'static str, bool, bool) {
        (e.label(), e.is_missing(), e.repeats())
    }

    #[test]
    fn gone_objects_and_versions_are_missing() {
        for (status, code) in [(404, "NoSuchKey"), (404, "NoSuchVersion")] {
            let e = classify(answer(status, code));
            assert_eq!(class(&e), ("missing", true, false), "{code}: {e}");
            assert!(e.to_string().contains(code), "{e}");
        }
    }

    #[test]
    fn permanent_refusals_repeat() {
        for (status, code, label) in [
            (403, "AccessDenied", "access_denied"),
            (403, "InvalidAccessKeyId", "access_denied"),
            (403, "InvalidObjectState", "archived"),
            (404, "NoSuchBucket", "no_such_bucket"),
            (400, "InvalidArgument", "s3_refused"),
            (404, "", "s3_refused"),
        ] {
            let e = classify(answer(status, code));
            assert_eq!(class(&e), (label, false, true), "{status} {code}: {e}");
        }
    }

    #[test]
    fn outages_and_throttling_are_transient() {
        for (status, code) in [
            (500, "InternalError"),
            (503, "SlowDown"),
            (503, "ServiceUnavailable"),
            (400, "RequestTimeout"),
            (403, "RequestTimeTooSkewed"),
            (400, "ExpiredToken"),
            (429, "TooManyRequests"),
            (412, "PreconditionFailed"),
        ] {
            let e = classify(answer(status, code));
            assert_eq!(class(&e), ("fetch", false, false), "{status} {code}: {e}");
        }
        let no_answer = [
            SdkError::timeout_error("operation timed out"),
            SdkError::dispatch_failure(ConnectorError::timeout("connect timed out".into())),
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into())),
        ];
        for err in no_answer {
            let e = classify(err);
            assert_eq!(class(&e), ("fetch", false, false), "{e}");
        }
    }

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-99/1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes 0-99/*"), None);
    }
}
