//! The channel's server side (docs/channel.md): an HTTP/1.1 listener on TCP or a unix socket
//! that checks each `POST /v1/batches` (token, idempotency key, gzip, line rules, caps), stores
//! it in the spool and answers only once it is durable; plus `GET /v1/limits` (the caps it
//! applies, so producers cut batches that fit), `/health`, `/ready` and `/metrics`.
//!
//! It never waits for delivery: outputs read the spool on their own. On shutdown it stops
//! accepting, lets in-flight requests finish (new ones get 503) and returns.
//!
//! It defends the channel against local processes that would hold it hostage (no token is
//! needed to open a connection): a connection cap (at the cap the longest-idle connection is
//! closed for the new one; accept waits only when every one is busy), a watchdog per
//! connection that closes idle and slow-header connections, per-read and minimum-rate
//! timeouts on bodies, and a body budget taken as bytes arrive (`[listen]` in docs/relay.md).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sluice_channel::decode::{self, BatchError, DecodeLimits};
use sluice_channel::limits::ChannelLimits;
use sluice_channel::wire::{
    validate_idempotency_key, BATCHES_PATH, EVENTS_HEADER, IDEMPOTENCY_HEADER, LIMITS_PATH,
    MAX_TAG_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ChannelGuard, Limits, ListenAddress};
use crate::metrics::{Event, Metrics, Reaped, Refusal};
use crate::spool::{AppendError, Appended, Spool};

/// Errors of the listener itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot write the bound address to {path}: {source}")]
    AddressFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) spool: Spool,
    pub(crate) limits: Limits,
    pub(crate) token: Option<String>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutting_down: AtomicBool,
    /// Bodies being read or stored, in KiB, taken as the bytes arrive: bounds the relay's
    /// memory whatever the number of producers. A batch that does not fit now gets 503 +
    /// Retry-After.
    pub(crate) body_budget: tokio::sync::Semaphore,
    /// The connection cap and timeouts of `[listen]`.
    pub(crate) guard: ChannelGuard,
}

/// Memory for request bodies in flight, at least two of the largest accepted.
pub(crate) fn body_budget(limits: &Limits) -> tokio::sync::Semaphore {
    let bytes = (64u64 << 20).max(2 * limits.max_body_bytes);
    tokio::sync::Semaphore::new(
        (bytes >> 10).min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize,
    )
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json(status, serde_json::json!({ "error": message.into() }))
}

fn busy(status: StatusCode, message: &str, retry_after: u64) -> Answer {
    let mut r = error(status, message);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// Compares secrets without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl State {
    /// Routes one request.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Answer, Infallible> {
        let path = req.uri().path().to_string();
        Ok(match (req.method(), path.as_str()) {
            (&Method::POST, BATCHES_PATH) => self.post_batch(req).await,
            (&Method::GET, LIMITS_PATH) => self.limits(),
            (&Method::GET, "/health") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/ready") => self.ready(),
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            (_, BATCHES_PATH | LIMITS_PATH | "/health" | "/ready" | "/metrics") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, format!("no such path {path:?}")),
        })
    }

    /// The caps this relay applies (docs/channel.md). Like `/health`, it needs no token: the
    /// numbers are no secret and a producer reads them before it sends anything.
    fn limits(&self) -> Answer {
        let limits = ChannelLimits {
            max_body_bytes: self.limits.max_body_bytes,
            max_batch_bytes: self.limits.max_batch_bytes,
            max_event_bytes: self.limits.max_event_bytes,
            max_tag_bytes: MAX_TAG_BYTES as u64,
        };
        json(
            StatusCode::OK,
            serde_json::to_value(limits).unwrap_or_default(),
        )
    }

    fn ready(&self) -> Answer {
        let retry = self.spool.retry_after_secs();
        if self.shutting_down.load(Ordering::Relaxed) {
            busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down", retry)
        } else if !self.spool.has_room(self.limits.max_body_bytes.min(1 << 20)) {
            busy(StatusCode::SERVICE_UNAVAILABLE, "spool full", retry)
        } else {
            json(StatusCode::OK, serde_json::json!({"status": "ready"}))
        }
    }

    /// `POST /v1/batches`: checks the batch, stores it and answers once it is durable.
    async fn post_batch(&self, req: Request<Incoming>) -> Answer {
        let (parts, body) = req.into_parts();
        let mut body = BodyReader::new(body, &self.guard);
        let stored = self.store_batch(&parts.headers, &mut body).await;
        match stored {
            Ok(Stored { events, duplicate }) => json(
                StatusCode::OK,
                serde_json::json!({"events": events, "duplicate": duplicate}),
            ),
            Err(refused) => {
                // Read what is left of the body (bounded, no memory kept) so the producer
                // reads this answer instead of a reset: closing a socket with unread bytes
                // makes the kernel send RST, which can overtake the answer.
                body.drain().await;
                if body.timed_out {
                    self.metrics.channel.reaped[Reaped::BodyTimeout as usize].inc();
                }
                self.metrics.record(Event::Refused {
                    why: refused.why,
                    status: refused.status.as_u16(),
                    message: &refused.message,
                });
                let mut answer = match refused.retry_after {
                    Some(secs) => busy(refused.status, &refused.message, secs),
                    None => error(refused.status, refused.message),
                };
                if !body.ended {
                    // The rest of the body is not coming (or not read): this connection
                    // cannot carry another request.
                    answer
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                answer
            }
        }
    }

    /// The steps of a batch, in the order docs/channel.md answers them: headers, room, body,
    /// duplicate, lines, then the spool.
    async fn store_batch(
        &self,
        headers: &HeaderMap,
        body: &mut BodyReader,
    ) -> Result<Stored, Refused> {
        let head = self.check_head(headers)?;
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(self.unavailable("shutting down"));
        }
        let max_body = self.limits.max_body_bytes;
        let too_large =
            || Refused::too_large(format!("body over limits.max_body_bytes ({max_body})"));
        let declared = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(too_large());
        }
        // Held until the batch is stored or refused: its bytes are in memory until then.
        let mut budget = Budget::new(&self.body_budget, &self.metrics);
        let mut chunks = Vec::new();
        while let Some(data) = body.next().await.map_err(|e| match e {
            BodyError::Read(e) => Refused::bad_request(format!("body could not be read: {e}")),
            BodyError::TimedOut(why) => self.unavailable(&why),
        })? {
            if body.received > max_body {
                return Err(too_large());
            }
            if !budget.cover(body.received) {
                return Err(self.unavailable("too many batch bytes in flight"));
            }
            chunks.push(data);
        }
        let body = concat(chunks);
        if let Some(events) = self.spool.lookup(&head.key) {
            self.metrics.record(Event::Duplicate);
            return Ok(Stored {
                events,
                duplicate: true,
            });
        }
        let events = self.check_lines(&body, head.declared_events).await?;
        self.append(&head.key, events, body).await
    }

    /// Token, idempotency key, encoding and the optional event count.
    fn check_head(&self, headers: &HeaderMap) -> Result<BatchHead, Refused> {
        if let Some(token) = &self.token {
            let given = headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            match given {
                Some(g) if same_secret(g, token.as_bytes()) => {}
                Some(_) => return Err(Refused::unauthorized("wrong token")),
                None => return Err(Refused::unauthorized("missing Authorization: Bearer token")),
            }
        }
        let key = match headers.get(IDEMPOTENCY_HEADER).map(|v| v.to_str()) {
            Some(Ok(k)) if validate_idempotency_key(k) => k.to_string(),
            Some(_) => {
                return Err(Refused::bad_request(
                    "bad Idempotency-Key: 1 to 128 bytes of [A-Za-z0-9._:-]",
                ))
            }
            None => return Err(Refused::bad_request("missing Idempotency-Key")),
        };
        let gzip = headers
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        if !gzip {
            return Err(Refused::bad_request("Content-Encoding must be gzip"));
        }
        let declared_events = match headers.get(EVENTS_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| Refused::bad_request("X-Sluice-Events is not a number"))?,
            ),
        };
        Ok(BatchHead {
            key,
            declared_events,
        })
    }

    /// Inflates and checks every line (off the I/O threads: it is CPU work); the number of
    /// events, which must match the count the producer declared, if it did.
    async fn check_lines(&self, body: &Bytes, declared: Option<u64>) -> Result<u64, Refused> {
        let limits = DecodeLimits {
            max_batch_bytes: self.limits.max_batch_bytes,
            max_event_bytes: self.limits.max_event_bytes,
        };
        let body = body.clone();
        let checked = tokio::task::spawn_blocking(move || decode::check(&body, limits))
            .await
            .map_err(|e| {
                Refused::new(
                    Refusal::Internal,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("check failed: {e}"),
                )
            })?
            .map_err(|e| match e {
                BatchError::Malformed(m) => Refused::bad_request(m),
                BatchError::TooLarge(m) => Refused::too_large(m),
            })?;
        match declared {
            Some(n) if n != checked.events => Err(Refused::bad_request(format!(
                "X-Sluice-Events says {n} but the body holds {} lines",
                checked.events
            ))),
            _ => Ok(checked.events),
        }
    }

    /// Stores a checked batch; answers only once it is durable.
    async fn append(&self, key: &str, events: u64, body: Bytes) -> Result<Stored, Refused> {
        let size = body.len() as u64;
        match self.spool.append(key, events, body).await {
            Ok(Appended::Stored) => {
                self.metrics.record(Event::Stored {
                    events,
                    bytes: size,
                });
                Ok(Stored {
                    events,
                    duplicate: false,
                })
            }
            Ok(Appended::Duplicate { events }) => {
                self.metrics.record(Event::Duplicate);
                Ok(Stored {
                    events,
                    duplicate: true,
                })
            }
            Err(AppendError::Full { retry_after_secs }) => Err(Refused {
                why: Refusal::SpoolFull,
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "spool full".into(),
                retry_after: Some(retry_after_secs),
            }),
            Err(AppendError::TooLarge(n)) => Err(Refused::too_large(format!(
                "batch of {n} bytes cannot fit spool.max_bytes"
            ))),
            Err(e @ (AppendError::Io(_) | AppendError::Closed)) => {
                tracing::error!(error = %e, "batch not stored");
                Err(self.unavailable(&e.to_string()))
            }
        }
    }

    /// 503 with the spool's `Retry-After`: the relay cannot take the batch now.
    fn unavailable(&self, message: &str) -> Refused {
        Refused {
            why: Refusal::Unavailable,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: Some(self.spool.retry_after_secs()),
        }
    }
}

/// What the headers of a batch say, once checked.
struct BatchHead {
    key: String,
    /// `X-Sluice-Events`, when given.
    declared_events: Option<u64>,
}

/// A batch the spool holds (now, or from before under the same key).
struct Stored {
    events: u64,
    duplicate: bool,
}

/// A batch not stored: what is counted and what the producer is told.
struct Refused {
    why: Refusal,
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After` (429 and 503: the producer retries the same key).
    retry_after: Option<u64>,
}

impl Refused {
    fn new(why: Refusal, status: StatusCode, message: impl Into<String>) -> Self {
        Refused {
            why,
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refused::new(Refusal::BadRequest, StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Refused::new(Refusal::Unauthorized, StatusCode::UNAUTHORIZED, message)
    }

    fn too_large(message: impl Into<String>) -> Self {
        Refused::new(Refusal::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, message)
    }
}

/// Joins the frames of a body (one copy, only once the whole body is in).
fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut buf = bytes::BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                buf.extend_from_slice(&c);
            }
            buf.freeze()
        }
    }
}

/// Part of the body budget, in KiB, taken as a body's bytes arrive and given back on drop.
struct Budget<'a> {
    semaphore: &'a Semaphore,
    metrics: &'a Metrics,
    kib: u32,
}

impl<'a> Budget<'a> {
    fn new(semaphore: &'a Semaphore, metrics: &'a Metrics) -> Self {
        Budget {
            semaphore,
            metrics,
            kib: 0,
        }
    }

    /// Takes what `bytes` in all need beyond what is held; false when the budget has not
    /// that much left now.
    fn cover(&mut self, bytes: u64) -> bool {
        let want = bytes.div_ceil(1024).min(u32::MAX as u64) as u32;
        let more = want.saturating_sub(self.kib);
        if more == 0 {
            return true;
        }
        match self.semaphore.try_acquire_many(more) {
            Ok(permit) => {
                permit.forget();
                self.kib += more;
                self.metrics
                    .channel
                    .body_budget_bytes
                    .add(i64::from(more) << 10);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.semaphore.add_permits(self.kib as usize);
        self.metrics
            .channel
            .body_budget_bytes
            .add(-(i64::from(self.kib) << 10));
    }
}

enum BodyError {
    Read(hyper::Error),
    /// The body stalled or fell below the rate floor; the reason, for the producer.
    TimedOut(String),
}

/// Past a refusal, at most this much more of the body is read and thrown away so the producer
/// gets a clean answer instead of a reset connection; beyond it the connection is dropped.
const DRAIN_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a request body frame by frame under the `[listen]` body timeouts: each read must come
/// within `body_read_timeout`, and once that first window is over the body must have kept up
/// `min_body_bytes_per_sec` on average.
struct BodyReader {
    body: Incoming,
    read_timeout: Duration,
    min_rate: u64,
    start: Instant,
    last: Instant,
    /// Bytes received so far.
    received: u64,
    /// The body's end was read.
    ended: bool,
    /// A read timed out (the connection is to be closed, not drained).
    timed_out: bool,
    /// A read failed.
    failed: bool,
}

impl BodyReader {
    fn new(body: Incoming, guard: &ChannelGuard) -> Self {
        let now = Instant::now();
        BodyReader {
            ended: hyper::body::Body::is_end_stream(&body),
            body,
            read_timeout: guard.body_read_timeout,
            min_rate: guard.min_body_bytes_per_sec,
            start: now,
            last: now,
            received: 0,
            timed_out: false,
            failed: false,
        }
    }

    /// When the next bytes must have come: the per-read timeout, or sooner the time by which
    /// the bytes received so far plus the next one keep the rate floor.
    fn deadline(&self) -> Instant {
        let gap = self.last + self.read_timeout;
        if self.min_rate == 0 {
            return gap;
        }
        let allowed = Duration::from_secs_f64((self.received + 1) as f64 / self.min_rate as f64);
        match (self.start + self.read_timeout).checked_add(allowed) {
            Some(rate) => gap.min(rate.max(self.last)),
            None => gap,
        }
    }

    /// The next data of the body; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        while !self.ended {
            let frame = match tokio::time::timeout_at(self.deadline(), self.body.frame()).await {
                Err(_) => {
                    self.timed_out = true;
                    let secs = self.start.elapsed().as_secs_f64();
                    return Err(BodyError::TimedOut(format!(
                        "the body stalled: {} bytes in {secs:.1} s (listen.body_read_timeout_ms, \
                         listen.min_body_bytes_per_sec)",
                        self.received
                    )));
                }
                Ok(None) => {
                    self.ended = true;
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    self.failed = true;
                    return Err(BodyError::Read(e));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                self.received += data.len() as u64;
                self.last = Instant::now();
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// Reads and throws away the rest of the body, at most [`DRAIN_BYTES`] more, under the
    /// same timeouts; nothing when a read already failed or timed out.
    async fn drain(&mut self) {
        let limit = self.received.saturating_add(DRAIN_BYTES);
        while !self.timed_out && !self.failed && !self.ended && self.received <= limit {
            if self.next().await.is_err() {
                break;
            }
        }
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `address`; a stale unix socket file is replaced.
    pub(crate) async fn bind(address: &ListenAddress) -> Result<Listener, IngestError> {
        let bind_err = |source| IngestError::Bind {
            address: address.to_string(),
            source,
        };
        match address {
            ListenAddress::Tcp(a) => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind(a).await.map_err(bind_err)?,
            )),
            ListenAddress::Unix(p) => {
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(bind_err(e)),
                }
                Ok(Listener::Unix(
                    tokio::net::UnixListener::bind(p).map_err(bind_err)?,
                    p.clone(),
                ))
            }
        }
    }

    /// The bound address, as written to `listen.address_file`.
    pub(crate) fn local_address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// Writes `text` to `path` atomically (temporary file, then rename).
pub(crate) fn write_address_file(path: &std::path::Path, text: &str) -> Result<(), IngestError> {
    let err = |source| IngestError::AddressFile {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{text}\n")).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Serves `listener` until `stop` is cancelled, then waits (at most `grace`) for in-flight
/// requests.
///
/// At most `listen.max_connections` connections are open at once. At the cap, the connection
/// that has waited longest for a request is closed to make room (closing an idle keep-alive
/// connection is always allowed by HTTP; the producer opens another), so connections that do
/// nothing can never keep a producer out. When every connection is busy with a request, the
/// listener stops accepting rather than accepting and closing the newest: waiting connections
/// stay in the kernel's backlog in arrival order and cost no descriptor of ours, and each gets
/// its turn as soon as a request ends, instead of racing the others with failed attempts.
///
/// With a non-zero `linger` it goes on accepting connections and batches after `stop`, as long
/// as any producer is still connected and at most `linger`: a collector stopping beside the
/// relay (the same pod) still sends the batches of its last objects during its own shutdown,
/// and they should land here rather than be refused and redelivered elsewhere.
pub(crate) async fn serve(
    listener: Listener,
    state: Arc<State>,
    stop: CancellationToken,
    grace: Duration,
    linger: Duration,
) {
    let tracker = TaskTracker::new();
    // Tells connections to finish the request in flight and close instead of keeping alive.
    let close = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(state.guard.max_connections));
    let live = Mutex::new(Vec::<std::sync::Weak<Activity>>::new());
    let mut last_cap_log: Option<Instant> = None;
    let mut at_cap_since_log = 0u64;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                state.metrics.channel.at_cap.inc();
                at_cap_since_log += 1;
                let evicted = evict_one(&live);
                // Once per burst: at most one line a minute, however often the cap is hit.
                if !last_cap_log.is_some_and(|t| t.elapsed() < CAP_LOG_INTERVAL) {
                    tracing::warn!(
                        max_connections = state.guard.max_connections,
                        times = at_cap_since_log,
                        "channel at listen.max_connections: the longest-idle connection is \
                         closed for each new one; when every one is busy with a request, new \
                         connections wait in the backlog"
                    );
                    last_cap_log = Some(Instant::now());
                    at_cap_since_log = 0;
                }
                if !evicted {
                    tracing::debug!("channel at its cap, every connection busy: accept waits");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok(io) => spawn_connection(io, slot, &state, &live, &tracker, &close),
            Err(e) => accept_failed(e).await,
        }
    }
    // A closed tracker still takes tasks; `wait` resolves whenever it holds none, that is when
    // no producer is connected.
    tracker.close();
    if !linger.is_zero() && !tracker.is_empty() {
        tracing::info!(
            connections = tracker.len(),
            "stopping: still accepting while producers are connected, at most {linger:?}"
        );
        let until = tokio::time::Instant::now() + linger;
        loop {
            // Each connection takes a slot here too: the cap holds while lingering.
            let accepted = tokio::select! {
                _ = tracker.wait() => break,
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(
                        connections = tracker.len(),
                        "stopping: producers still connected after {linger:?}; refusing new batches"
                    );
                    break;
                }
                r = async {
                    let slot = slots.clone().acquire_owned().await;
                    (slot, accept(&listener).await)
                } => r,
            };
            match accepted {
                (Ok(slot), Ok(io)) => spawn_connection(io, slot, &state, &live, &tracker, &close),
                (_, Err(e)) => accept_failed(e).await,
                (Err(_), _) => break,
            }
        }
    }
    state.shutting_down.store(true, Ordering::Relaxed);
    close.cancel();
    if let Listener::Unix(_, p) = &listener {
        let _ = std::fs::remove_file(p);
    }
    drop(listener);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown: in-flight requests still running after {grace:?}; leaving them");
    }
}

/// At the cap: closes the connection that has waited longest for a request (keep-alive idle
/// first, then one whose headers are still coming), so that idle connections can never keep
/// a new one out; false when every connection is busy with a request.
fn evict_one(live: &Mutex<Vec<std::sync::Weak<Activity>>>) -> bool {
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|a| a.strong_count() > 0);
    let mut candidates: Vec<(u8, Instant, Arc<Activity>)> = live
        .iter()
        .filter_map(|a| a.upgrade())
        .filter_map(|a| {
            let rank = match a.phase() {
                Phase::Idle(since) => (0, since),
                Phase::Head(since) => (1, since),
                Phase::Busy | Phase::Evicted => return None,
            };
            Some((rank.0, rank.1, a))
        })
        .collect();
    candidates.sort_by_key(|c| (c.0, c.1));
    candidates.into_iter().any(|(_, _, a)| a.evict())
}

/// Serves one accepted connection on `tracker`, holding its cap `slot` until it ends.
fn spawn_connection(
    io: Box<dyn Io>,
    slot: tokio::sync::OwnedSemaphorePermit,
    state: &Arc<State>,
    live: &Mutex<Vec<std::sync::Weak<Activity>>>,
    tracker: &TaskTracker,
    close: &CancellationToken,
) {
    let state = state.clone();
    let close = close.clone();
    let activity = Arc::new(Activity::new());
    {
        let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= 2 * state.guard.max_connections {
            live.retain(|a| a.strong_count() > 0);
        }
        live.push(Arc::downgrade(&activity));
    }
    tracker.spawn(async move {
        state.metrics.channel.connections.inc();
        state.metrics.channel.connections_open.add(1);
        serve_connection(io, activity, state.clone(), close).await;
        state.metrics.channel.connections_open.add(-1);
        drop(slot);
    });
}

/// EMFILE and friends: wait a little rather than spin.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// How often, at most, reaching the connection cap is logged.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(60);

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

async fn accept(listener: &Listener) -> std::io::Result<Box<dyn Io>> {
    match listener {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            Ok(Box::new(s))
        }
    }
}

/// Where a connection stands, for its watchdog.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request since then (just accepted, or its last answer given).
    Idle(Instant),
    /// The first bytes of a request came then; its headers are not all in.
    Head(Instant),
    /// A request is being handled: the body timeouts apply, not the watchdog.
    Busy,
    /// Chosen to make room at the cap: to be closed now.
    Evicted,
}

/// A connection's phase, moved by its reads and its requests; the watchdog is told of each
/// move.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            // A new connection's first request must come within the header timeout: only a
            // connection that has done a request since may idle longer.
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, next: impl FnOnce(Phase) -> Option<Phase>) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = next(*phase) {
            *phase = p;
            self.changed.notify_one();
        }
    }

    /// Bytes were read: an idle connection has started a request.
    fn read(&self) {
        self.set(|p| match p {
            Phase::Idle(_) => Some(Phase::Head(Instant::now())),
            _ => None,
        });
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection for closing unless a request is being handled on it.
    fn evict(&self) -> bool {
        let mut evicted = false;
        self.set(|p| match p {
            Phase::Idle(_) | Phase::Head(_) => {
                evicted = true;
                Some(Phase::Evicted)
            }
            Phase::Busy | Phase::Evicted => None,
        });
        evicted
    }

    /// A request came (its headers are in): false when the connection was evicted.
    fn start_request(&self) -> bool {
        let mut started = false;
        self.set(|p| match p {
            Phase::Evicted => None,
            _ => {
                started = true;
                Some(Phase::Busy)
            }
        });
        started
    }

    /// When, unless the phase moves, the connection is to be closed, and why.
    fn deadline(&self, guard: &ChannelGuard) -> Option<(Instant, Reaped)> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Idle(since) => Some((since + guard.idle_timeout, Reaped::Idle)),
            Phase::Head(since) => Some((since + guard.header_timeout, Reaped::HeaderTimeout)),
            Phase::Busy => None,
            Phase::Evicted => Some((Instant::now(), Reaped::Evicted)),
        }
    }
}

/// A connection's I/O that tells its [`Activity`] when bytes arrive.
struct Watched {
    io: Box<dyn Io>,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves one connection under its watchdog: closed when idle past `idle_timeout`, when a
/// request's headers (the first one's counted from the connection's opening) take longer than
/// `header_timeout`, or when evicted at the cap (hyper's own header timer is not used: it also
/// runs while a keep-alive connection is idle, so the two could not differ).
async fn serve_connection(
    io: Box<dyn Io>,
    activity: Arc<Activity>,
    state: Arc<State>,
    close: CancellationToken,
) {
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let guard = state.guard;
    let metrics = state.metrics.clone();
    let on_request = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let activity = on_request.clone();
        async move {
            if !activity.start_request() {
                // Evicted just before this request came: the connection is being closed.
                return Ok(busy(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "connection closed to make room",
                    state.spool.retry_after_secs(),
                ));
            }
            let answer = state.handle(req).await;
            activity.set(|_| Some(Phase::Idle(Instant::now())));
            answer
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&guard);
        let expired = async {
            match deadline {
                Some((at, why)) => {
                    tokio::time::sleep_until(at).await;
                    why
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "channel connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            why = expired => {
                // The phase may have moved since the deadline was taken.
                if activity.deadline(&guard).is_some_and(|(at, _)| at <= Instant::now()) {
                    metrics.channel.reaped[why as usize].inc();
                    tracing::debug!(reason = why.label(), "channel connection closed");
                    return;
                }
            }
            _ = close.cancelled(), if !stopping => {
                // Finish the request in flight, then close instead of keeping alive.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_EVENT};
    use sluice_channel::client::ChannelClient;

    /// A whole relay in this process on 127.0.0.1:0 requiring a token, `limits` as its
    /// `[limits]` table.
    async fn relay(
        dir: &std::path::Path,
        limits: &str,
    ) -> (crate::app::Running, CancellationToken) {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n[spool]\ndir = \"{}\"\n{limits}\n\
             [[outputs]]\ntype = \"file\"\npath = \"{}\"\n",
            dir.join("spool").display(),
            dir.join("out.log").display()
        );
        let settings = Settings::from_toml(&text, std::path::Path::new("t.toml"), &|_| None)
            .expect("valid relay config");
        let stop = CancellationToken::new();
        let running = crate::app::start(settings, stop.clone())
            .await
            .expect("relay starts");
        (running, stop)
    }

    #[test]
    fn v1_defaults_are_the_relays_defaults() {
        let d = ChannelLimits::V1_DEFAULTS;
        assert_eq!(
            (d.max_body_bytes, d.max_batch_bytes, d.max_event_bytes),
            (DEFAULT_MAX_BODY, DEFAULT_MAX_BATCH, DEFAULT_MAX_EVENT)
        );
        assert_eq!(d.max_tag_bytes, MAX_TAG_BYTES as u64);
    }

    #[tokio::test]
    async fn limits_endpoint_tells_the_configured_caps_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let (running, stop) = relay(
            dir.path(),
            "[limits]\nmax_body_bytes = 100000\nmax_batch_bytes = 400000\nmax_event_bytes = 65536\n",
        )
        .await;
        let url = format!("http://{}", running.address);
        // No token: the caps are no secret (a relay with a token answers them too).
        let client = ChannelClient::new(&url, None, Duration::from_secs(10)).unwrap();
        let limits = client.limits().await.unwrap();
        assert_eq!(
            limits,
            ChannelLimits {
                max_body_bytes: 100_000,
                max_batch_bytes: 400_000,
                max_event_bytes: 65_536,
                max_tag_bytes: 256,
            }
        );
        stop.cancel();
        running.wait().await;

        let dir = tempfile::tempdir().unwrap();
        let (running, stop) = relay(dir.path(), "").await;
        let url = format!("http://{}", running.address);
        let client = ChannelClient::new(&url, None, Duration::from_secs(10)).unwrap();
        assert_eq!(client.limits().await.unwrap(), ChannelLimits::V1_DEFAULTS);
        stop.cancel();
        running.wait().await;
    }
}
