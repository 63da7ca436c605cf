//! The channel's server side (docs/channel.md): an HTTP/1.1 listener on TCP or a unix socket
//! that checks each `POST /v1/batches` (token, idempotency key, gzip, line rules, caps), stores
//! it in the spool and answers only once it is durable; plus `GET /v1/limits` (the caps it
//! applies, so producers cut batches that fit), `/health`, `/ready` and `/metrics`.
//!
//! It never waits for delivery: outputs read the spool on their own. On shutdown it stops
//! accepting, lets in-flight requests finish (new ones get 503) and returns.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sluice_channel::decode::{self, BatchError, DecodeLimits};
use sluice_channel::limits::ChannelLimits;
use sluice_channel::wire::{
    validate_idempotency_key, BATCHES_PATH, EVENTS_HEADER, IDEMPOTENCY_HEADER, LIMITS_PATH,
    MAX_TAG_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, ListenAddress};
use crate::metrics::{Event, Metrics, Refusal};
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
    /// Bodies being read or stored, in KiB: bounds the relay's memory whatever the number of
    /// producers. A batch that does not fit now gets 503 + Retry-After.
    pub(crate) body_budget: tokio::sync::Semaphore,
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
        match self.store_batch(req).await {
            Ok(Stored { events, duplicate }) => json(
                StatusCode::OK,
                serde_json::json!({"events": events, "duplicate": duplicate}),
            ),
            Err(refused) => {
                self.metrics.record(Event::Refused {
                    why: refused.why,
                    status: refused.status.as_u16(),
                    message: &refused.message,
                });
                match refused.retry_after {
                    Some(secs) => busy(refused.status, &refused.message, secs),
                    None => error(refused.status, refused.message),
                }
            }
        }
    }

    /// The steps of a batch, in the order docs/channel.md answers them: headers, room, body,
    /// duplicate, lines, then the spool.
    async fn store_batch(&self, req: Request<Incoming>) -> Result<Stored, Refused> {
        let head = self.check_head(req.headers())?;
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(self.unavailable("shutting down"));
        }
        let _reserved = self.reserve_body(req.headers())?;
        let max_body = self.limits.max_body_bytes;
        let body = read_body(req.into_body(), max_body)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    Refused::too_large(format!("body over limits.max_body_bytes ({max_body})"))
                }
                BodyError::Read(e) => Refused::bad_request(format!("body could not be read: {e}")),
            })?;
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

    /// Reserves the body's memory before reading it: its declared length, else the cap.
    fn reserve_body(
        &self,
        headers: &HeaderMap,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, Refused> {
        let max_body = self.limits.max_body_bytes;
        let declared = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(max_body)
            .min(max_body);
        let kib = (declared.div_ceil(1024).max(1)).min(u32::MAX as u64) as u32;
        self.body_budget
            .try_acquire_many(kib)
            .map_err(|_| self.unavailable("too many batches in flight"))
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

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Past the cap, this much more is read and thrown away so the producer gets a clean 413
/// instead of a reset connection; beyond it the connection is dropped.
const DRAIN_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a body of at most `max` bytes; a larger one is drained (bounded) and refused.
async fn read_body(mut body: Incoming, max: u64) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen <= max {
                buf.extend_from_slice(&data);
            } else {
                buf = bytes::BytesMut::new();
                if seen > max + DRAIN_BYTES {
                    break;
                }
            }
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
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
    let spawn = |io, tracker: &TaskTracker| {
        tracker.spawn(serve_connection(io, state.clone(), close.clone()));
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok(io) => spawn(io, &tracker),
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
            let accepted = tokio::select! {
                _ = tracker.wait() => break,
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(
                        connections = tracker.len(),
                        "stopping: producers still connected after {linger:?}; refusing new batches"
                    );
                    break;
                }
                r = accept(&listener) => r,
            };
            match accepted {
                Ok(io) => spawn(io, &tracker),
                Err(e) => accept_failed(e).await,
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

/// EMFILE and friends: wait a little rather than spin.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

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

async fn serve_connection(io: Box<dyn Io>, state: Arc<State>, close: CancellationToken) {
    let service = hyper::service::service_fn(move |req| state.clone().handle(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "channel connection ended with an error");
            }
        }
        _ = close.cancelled() => {
            // Finish the request in flight, then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
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
