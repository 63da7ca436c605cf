//! One connection slot of a `devo` or `relay` output: TCP, optionally TLS (tls.rs), with the
//! life cycle DEVO.md asks for, and a reader that watches the peer all the time.
//!
//! - Connect: resolve the name, try every address (IPv4 and IPv6) within `connect_timeout`.
//! - Handshake within `handshake_timeout`. The stream is then split: a reader task reads from
//!   the peer for as long as the connection lives (Devo sends nothing; what comes is dropped)
//!   and reports at once, with a log line, how the peer's side ended: EOF, reset, or a TLS
//!   alert such as the late refusal of our client certificate (TLS 1.3 says so only after the
//!   client's handshake is over). A write aborts as soon as the peer's side has ended.
//! - Settle (`tls_settle_ms`): until a connection of this slot has been confirmed, wait that
//!   long after the handshake for such a refusal before writing, so a refused certificate is
//!   reported as a handshake error and no batch is written into a refused connection.
//! - Before a batch: a connection whose peer already closed is replaced when nothing written
//!   on it awaits confirmation (with something awaiting, the worker fails it: see
//!   `output/worker.rs`).
//! - Every write and flush within `write_timeout`. A written batch is *not* delivered: it waits
//!   in the connection's `unconfirmed` list until the connection is closed gracefully and the
//!   peer answers the close (confirm.rs).
//! - Spare: once the current connection is halfway to its rotation (`confirm_bytes`,
//!   `confirm_interval_ms`), the next one is opened in a task, so the rotation does not wait
//!   for a connect and a handshake (only while the slot is trusted, see settle).
//!
//! Errors name the phase and the peer. It does not retry: the worker owns backoff and resend.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::tls::{explain, rustls_error, TlsClient};
use super::{OutputError, Written};
use crate::config::NetSettings;
use crate::metrics::{ConfirmFailure, Metrics};

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How the peer's side of a connection ended, as the reader task saw it.
#[derive(Debug, Clone)]
pub(crate) enum PeerEnd {
    /// A clean end of stream: the peer's FIN (TCP) or close_notify (TLS). `after_ours`: our
    /// own close had started when it arrived.
    Eof { after_ours: bool },
    /// Anything else: a reset, a TLS alert, a TCP close without close_notify, a read error.
    Failed { why: ConfirmFailure, reason: String },
}

impl PeerEnd {
    /// Why writes on a connection that ended this way (before our close) are not confirmed.
    pub(crate) fn failure(&self) -> (ConfirmFailure, String) {
        match self {
            PeerEnd::Eof { .. } => (
                ConfirmFailure::PeerClosed,
                "the peer closed the connection before we did".into(),
            ),
            PeerEnd::Failed { why, reason } => (*why, reason.clone()),
        }
    }
}

/// One open connection and the batches written on it that await confirmation.
pub(crate) struct Conn {
    pub(super) writer: WriteHalf<Box<dyn Stream>>,
    /// The TCP socket under the (maybe TLS) stream, to read its send queue. Valid while
    /// `writer` lives (it shares ownership of the stream).
    pub(super) fd: RawFd,
    pub(super) tls: bool,
    /// `address (peer ip:port)`, for errors and logs.
    pub(crate) dest: String,
    pub(super) opened: Instant,
    pub(super) last_used: Instant,
    /// `Some` once the reader saw the peer's side end.
    pub(super) ended: watch::Receiver<Option<PeerEnd>>,
    /// Set just before our close starts, so the reader can tell whose close came first.
    pub(super) closing: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    /// Written on this connection, not yet confirmed; in write order.
    pub(crate) unconfirmed: Vec<Written>,
    /// Wire bytes of `unconfirmed`.
    pub(crate) unconfirmed_bytes: u64,
    /// When the oldest of `unconfirmed` was written.
    pub(crate) first_unconfirmed: Option<Instant>,
    output: String,
    metrics: Arc<Metrics>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.metrics.output(&self.output).connections_open.add(-1);
    }
}

impl Conn {
    /// How the peer's side ended, if it has.
    pub(crate) fn peer_end(&self) -> Option<PeerEnd> {
        self.ended.borrow().clone()
    }

    /// Waits until the peer's side ends.
    pub(crate) async fn wait_peer_end(&mut self) -> PeerEnd {
        match self.ended.wait_for(|e| e.is_some()).await {
            Ok(e) => e.clone().unwrap_or(PeerEnd::Eof { after_ours: false }),
            // The reader is gone without a word (aborted): treat as a failure.
            Err(_) => PeerEnd::Failed {
                why: ConfirmFailure::Write,
                reason: "the connection's reader stopped".into(),
            },
        }
    }

    fn peer_error(&self) -> Option<OutputError> {
        self.peer_end().map(|end| {
            let (why, reason) = end.failure();
            OutputError::Peer {
                dest: self.dest.clone(),
                why,
                reason,
            }
        })
    }

    /// Writes `data` within `after`; aborts at once when the peer's side ends meanwhile.
    pub(crate) async fn write_all(
        &mut self,
        data: &[u8],
        after: std::time::Duration,
    ) -> Result<(), OutputError> {
        if let Some(e) = self.peer_error() {
            return Err(e);
        }
        let r = race_end(
            self.ended.clone(),
            timeout(after, self.writer.write_all(data)),
        )
        .await;
        self.settle(r, after)
    }

    /// Hands what TLS buffered to the socket, within `after`.
    pub(crate) async fn flush(&mut self, after: std::time::Duration) -> Result<(), OutputError> {
        let r = race_end(self.ended.clone(), timeout(after, self.writer.flush())).await;
        self.settle(r, after)
    }

    /// The outcome of a write or flush raced against the peer's end: an end the reader saw
    /// (reset, alert, EOF) is the error reported, whatever the write itself says.
    fn settle(
        &mut self,
        r: Option<Result<std::io::Result<()>, tokio::time::error::Elapsed>>,
        after: std::time::Duration,
    ) -> Result<(), OutputError> {
        let dest = self.dest.clone();
        self.last_used = Instant::now();
        match r {
            None => Err(self.peer_error().unwrap_or(OutputError::Write {
                dest,
                source: std::io::ErrorKind::ConnectionAborted.into(),
            })),
            Some(Err(_)) => Err(OutputError::WriteTimeout { dest, after }),
            Some(Ok(Err(source))) => Err(self
                .peer_error()
                .unwrap_or(OutputError::Write { dest, source })),
            Some(Ok(Ok(()))) => Ok(()),
        }
    }

    /// Takes note of a batch written on this connection.
    pub(crate) fn record(&mut self, w: Written) {
        if self.unconfirmed.is_empty() {
            self.first_unconfirmed = Some(Instant::now());
        }
        self.unconfirmed_bytes += w.sent.bytes;
        self.unconfirmed.push(w);
    }
}

/// Reads from the peer until its side ends; reports how, once, and logs it at once.
async fn watch_peer(
    mut reader: ReadHalf<Box<dyn Stream>>,
    tx: watch::Sender<Option<PeerEnd>>,
    closing: Arc<AtomicBool>,
    output: String,
    dest: String,
    server_name: Option<String>,
) {
    let mut buf = vec![0u8; 4096];
    let end = loop {
        match reader.read(&mut buf).await {
            Ok(0) => {
                let after_ours = closing.load(Ordering::SeqCst);
                if after_ours {
                    tracing::debug!(output = %output, dest = %dest, "the peer answered our close");
                } else {
                    tracing::info!(output = %output, dest = %dest, "the peer closed the connection");
                }
                break PeerEnd::Eof { after_ours };
            }
            // Devo never sends data; ignore anything that comes.
            Ok(_) => continue,
            Err(e) => {
                let why = classify(&e);
                let reason = match &server_name {
                    Some(name) => explain(&e, name),
                    None => e.to_string(),
                };
                tracing::warn!(output = %output, dest = %dest, reason = %reason, "connection failed: {reason}");
                break PeerEnd::Failed { why, reason };
            }
        }
    };
    let _ = tx.send(Some(end));
}

/// The confirmation-failure reason of a read error.
pub(super) fn classify(e: &std::io::Error) -> ConfirmFailure {
    if rustls_error(e).is_some() || e.kind() == std::io::ErrorKind::UnexpectedEof {
        return ConfirmFailure::Tls;
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => ConfirmFailure::Reset,
        _ => ConfirmFailure::Write,
    }
}

/// Opens connections of one output (cheap to clone, so a spare can be opened in a task).
#[derive(Clone)]
struct Dialer {
    output: String,
    settings: Arc<NetSettings>,
    tls: Option<TlsClient>,
    metrics: Arc<Metrics>,
}

/// One pooled connection slot of a network output.
pub(crate) struct NetSink {
    output: String,
    pub(super) settings: Arc<NetSettings>,
    dialer: Dialer,
    pub(crate) conn: Option<Conn>,
    /// The next connection, opened in the background while the current one nears rotation,
    /// so a rotation does not wait for a connect and a handshake.
    spare: Option<JoinHandle<Result<Conn, OutputError>>>,
    /// A connection of this slot was confirmed since the last failure: the peer accepts our
    /// client certificate, so the settle wait is skipped.
    pub(crate) trusted: bool,
}

impl NetSink {
    pub(crate) fn new(
        output: String,
        settings: Arc<NetSettings>,
        tls: Option<TlsClient>,
        metrics: Arc<Metrics>,
    ) -> Self {
        NetSink {
            output: output.clone(),
            settings: settings.clone(),
            dialer: Dialer {
                output,
                settings,
                tls,
                metrics,
            },
            conn: None,
            spare: None,
            trusted: false,
        }
    }

    fn dest(&self) -> String {
        match &self.conn {
            Some(c) => c.dest.clone(),
            None => self.settings.address.clone(),
        }
    }

    /// Why the current connection must be closed (and its writes confirmed) before more is
    /// written on it, if it must.
    pub(crate) fn rotation_due(&self, now: Instant) -> Option<&'static str> {
        let c = self.conn.as_ref()?;
        let s = &self.settings;
        if c.unconfirmed_bytes >= s.confirm_bytes {
            return Some("confirm_bytes reached");
        }
        if c.first_unconfirmed
            .is_some_and(|t| now.duration_since(t) >= s.confirm_interval)
        {
            return Some("confirm_interval reached");
        }
        if now.duration_since(c.last_used) > s.idle_reconnect {
            return Some("idle");
        }
        if now.duration_since(c.opened) > s.max_connection_age {
            return Some("max_connection_age reached");
        }
        None
    }

    /// When the oldest unconfirmed write of the current connection reaches `confirm_interval`.
    pub(crate) fn confirm_deadline(&self) -> Option<Instant> {
        let c = self.conn.as_ref()?;
        c.first_unconfirmed
            .map(|t| t + self.settings.confirm_interval)
    }

    /// Makes sure a live connection is there before a batch is written.
    pub(crate) async fn before_batch(&mut self) -> Result<(), OutputError> {
        if let Some(c) = &self.conn {
            if c.unconfirmed.is_empty() && c.peer_end().is_some() {
                tracing::info!(output = %self.output, dest = %c.dest, "the server closed the connection; reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            if let Some(spare) = self.spare.take() {
                match spare.await {
                    Ok(Ok(c)) if c.peer_end().is_none() => self.conn = Some(c),
                    Ok(Ok(c)) => {
                        tracing::debug!(output = %self.output, dest = %c.dest, "the spare connection was closed by the server");
                    }
                    // Opened again below, where an error is reported.
                    Ok(Err(e)) => {
                        tracing::debug!(output = %self.output, error = %e, "spare connection failed")
                    }
                    Err(e) => {
                        tracing::debug!(output = %self.output, error = %e, "spare connection task failed")
                    }
                }
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.dialer.open(self.trusted).await?);
        }
        Ok(())
    }

    /// Starts opening the next connection in the background, when the current one is halfway
    /// to its rotation and no spare is there or on its way.
    pub(crate) fn prepare_spare(&mut self, now: Instant) {
        let Some(c) = &self.conn else { return };
        let s = &self.settings;
        let halfway = c.unconfirmed_bytes >= s.confirm_bytes / 2
            || c.first_unconfirmed
                .is_some_and(|t| now.duration_since(t) >= s.confirm_interval / 2);
        if !halfway || self.spare.is_some() || !self.trusted {
            return;
        }
        let dialer = self.dialer.clone();
        self.spare = Some(tokio::spawn(async move { dialer.open(true).await }));
    }

    /// Forgets the spare connection (after a failure, the next one is opened afresh).
    pub(crate) fn drop_spare(&mut self) {
        if let Some(h) = self.spare.take() {
            h.abort();
        }
    }

    /// The spare connection, if one was opened (for a graceful close on shutdown).
    pub(crate) async fn take_spare(&mut self) -> Option<Conn> {
        let h = self.spare.take()?;
        if !h.is_finished() {
            h.abort(); // still connecting: not worth waiting for on the way out
            return None;
        }
        match h.await {
            Ok(Ok(c)) => Some(c),
            _ => None,
        }
    }
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), OutputError> {
        let after = self.settings.write_timeout;
        match &mut self.conn {
            Some(c) => c.write_all(data, after).await,
            None => Err(OutputError::Write {
                dest: self.dest(),
                source: std::io::Error::new(std::io::ErrorKind::NotConnected, "not connected"),
            }),
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), OutputError> {
        let after = self.settings.write_timeout;
        match &mut self.conn {
            Some(c) => c.flush(after).await,
            None => Ok(()),
        }
    }
}

impl Dialer {
    /// Connects, handshakes, starts the reader; settles first unless `trusted`.
    async fn open(&self, trusted: bool) -> Result<Conn, OutputError> {
        let address = self.settings.address.clone();
        let connect_timeout = self.settings.connect_timeout;
        let (tcp, peer) = timeout(connect_timeout, connect_any(&address))
            .await
            .map_err(|_| OutputError::ConnectTimeout {
                address: address.clone(),
                after: connect_timeout,
            })??;
        let _ = tcp.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let dest = format!("{address} ({peer})");
        let server_name = self
            .tls
            .as_ref()
            .map(|t| t.server_name.to_str().into_owned());
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let handshake_timeout = self.settings.handshake_timeout;
                let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
                let s = timeout(handshake_timeout, handshake)
                    .await
                    .map_err(|_| OutputError::HandshakeTimeout {
                        address: dest.clone(),
                        after: handshake_timeout,
                    })?
                    .map_err(|e| OutputError::Handshake {
                        address: dest.clone(),
                        reason: explain(&e, server_name.as_deref().unwrap_or_default()),
                    })?;
                Box::new(s)
            }
        };
        let (reader, writer) = tokio::io::split(stream);
        let (tx, mut ended) = watch::channel(None);
        let closing = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(watch_peer(
            reader,
            tx,
            closing.clone(),
            self.output.clone(),
            dest.clone(),
            server_name,
        ));
        let m = self.metrics.output(&self.output);
        m.connections_open.add(1);
        let now = Instant::now();
        let conn = Conn {
            writer,
            fd,
            tls: self.tls.is_some(),
            dest: dest.clone(),
            opened: now,
            last_used: now,
            ended: ended.clone(),
            closing,
            reader,
            unconfirmed: Vec::new(),
            unconfirmed_bytes: 0,
            first_unconfirmed: None,
            output: self.output.clone(),
            metrics: self.metrics.clone(),
        };
        // TLS 1.3: a refused client certificate shows up as an alert after the handshake;
        // until this slot has seen a confirmed connection, give the server a moment to send it.
        let settle = self.settings.tls_settle;
        if conn.tls && !trusted && !settle.is_zero() {
            if let Ok(Ok(end)) = timeout(settle, ended.wait_for(|e| e.is_some())).await {
                let reason = match end.as_ref() {
                    Some(PeerEnd::Failed { reason, .. }) => reason.clone(),
                    _ => "the server closed the connection right after the handshake (client \
                          certificate refused?)"
                        .to_string(),
                };
                return Err(OutputError::Handshake {
                    address: dest,
                    reason,
                });
            }
        }
        m.connects.inc();
        if trusted {
            // A rotation (every few seconds): not worth an info line each time.
            tracing::debug!(output = %self.output, %address, %peer, tls = conn.tls, "connected");
        } else {
            tracing::info!(output = %self.output, %address, %peer, tls = conn.tls, "connected");
        }
        Ok(conn)
    }
}

/// Resolves `address` and tries every address it has, in order.
async fn connect_any(address: &str) -> Result<(TcpStream, SocketAddr), OutputError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|source| OutputError::Resolve {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, *addr)),
            Err(e) => last = Some((e, *addr)),
        }
    }
    match last {
        Some((source, peer)) => Err(OutputError::Connect {
            address: format!("{address} ({peer})"),
            source,
        }),
        None => Err(OutputError::Resolve {
            address: address.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        }),
    }
}

/// Runs `work` until it ends or the connection's reader sees the peer's end (then `None`).
async fn race_end<F: std::future::Future>(
    mut ended: watch::Receiver<Option<PeerEnd>>,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        r = work => Some(r),
        _ = ended.wait_for(|e| e.is_some()) => None,
    }
}
