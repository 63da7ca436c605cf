//! A test receiver standing in for Devo or an in-house relay: TCP on 127.0.0.1, optionally
//! TLS with a required client certificate, collecting every byte it is sent. It runs on its
//! own thread and runtime, so tests may block while it works.
//!
//! It can misbehave, with real faults: its first connections may never read and then close
//! with unread data (the kernel answers RST), or reset after reading some bytes (SO_LINGER 0);
//! its TLS side may refuse the client certificate late (TLS 1.3: after the client's handshake
//! is over). What a misbehaving connection read is not counted as seen.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

pub use crate::tls::ServerTls;

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    pub data: Mutex<Vec<u8>>,
    pub connections: AtomicU64,
    pub clean_closes: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// Misbehaving connections that did their fault.
    pub faults: AtomicU64,
    /// Bytes read by misbehaving connections (not in `data`).
    pub faulty_bytes: AtomicU64,
}

/// How one of the first connections misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Accepts and never reads; once at least `queued` bytes wait unread in its socket, drops
    /// it (the kernel answers RST because of the unread data).
    NeverReadThenClose { queued: usize },
    /// Reads `bytes` bytes (dropping them), then resets the connection (SO_LINGER 0).
    ResetAfter { bytes: usize },
}

/// Ways the receiver misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The fault of connection `i` (counted from 0) for `i < faults.len()`; later connections
    /// behave.
    pub faults: Vec<Fault>,
    /// TLS: hold back every read after the first (the ClientHello) until this long after it,
    /// so the server checks the client certificate only after the client has finished its
    /// handshake and started writing: a refusal arrives late, as an alert.
    pub late_verify: Option<Duration>,
    /// On the client's close, close the TCP connection without answering (no close_notify,
    /// no half close first): the client's writes are read but never confirmed.
    pub no_close_answer: bool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (port 0 for any).
    pub fn start(addr: &str, tls: Option<ServerTls>) -> Receiver {
        Self::start_with(addr, tls, Arc::new(Seen::default()))
    }

    /// Listens again, keeping what was seen before.
    pub fn start_with(addr: &str, tls: Option<ServerTls>, seen: Arc<Seen>) -> Receiver {
        Self::start_opts(addr, tls, seen, Options::default())
    }

    /// Listens on `addr`, misbehaving as `options` say.
    pub fn start_opts(
        addr: &str,
        tls: Option<ServerTls>,
        seen: Arc<Seen>,
        options: Options,
    ) -> Receiver {
        let std_listener = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::net::TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "bind {addr}: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        };
        std_listener.set_nonblocking(true).unwrap();
        let local = std_listener.local_addr().unwrap();
        let config = tls
            .as_ref()
            .map(|t| crate::tls::server_config(t).expect("the receiver's TLS configuration"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    let mut tasks = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let accepted =
                            tokio::time::timeout(Duration::from_millis(50), listener.accept())
                                .await;
                        let Ok(Ok((tcp, _))) = accepted else { continue };
                        let n = seen.connections.fetch_add(1, Ordering::Relaxed) as usize;
                        let seen = seen.clone();
                        let config = config.clone();
                        let stop = stop.clone();
                        let fault = options.faults.get(n).copied();
                        let late_verify = options.late_verify;
                        let answer = !options.no_close_answer;
                        tasks.push(tokio::spawn(async move {
                            if let Some(fault) = fault {
                                misbehave(tcp, fault, &seen).await;
                                return;
                            }
                            match config {
                                None => serve(tcp, &seen, &stop, answer).await,
                                Some(c) => {
                                    let acceptor = tokio_rustls::TlsAcceptor::from(c);
                                    let tcp = SlowReads::new(tcp, late_verify);
                                    match acceptor.accept(tcp).await {
                                        Ok(s) => serve(s, &seen, &stop, answer).await,
                                        Err(e) => seen.errors.lock().unwrap().push(e.to_string()),
                                    }
                                }
                            }
                        }));
                    }
                    drop(listener);
                    for t in tasks {
                        t.abort();
                    }
                });
            })
        };
        Receiver {
            addr: local,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops listening and drops every connection.
    pub fn stop(mut self) -> Arc<Seen> {
        self.halt();
        self.seen.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn data(&self) -> Vec<u8> {
        self.seen.data.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<Vec<u8>> {
        split_lines(&self.data())
    }

    /// Waits until at least `n` lines arrived.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        crate::wait::wait_lines(
            n,
            timeout,
            || self.lines(),
            || format!("; receiver errors: {:?}", self.seen.errors.lock().unwrap()),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}

pub fn split_lines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .map(|l| l.to_vec())
        .collect()
}

async fn serve<S>(mut s: S, seen: &Seen, stop: &AtomicBool, answer: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                // The client's close_notify (TLS) or FIN (TCP): answer in kind.
                if answer {
                    seen.clean_closes.fetch_add(1, Ordering::Relaxed);
                    let _ = s.shutdown().await;
                }
                return;
            }
            Ok(Ok(n)) => seen.data.lock().unwrap().extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                seen.errors.lock().unwrap().push(e.to_string());
                return;
            }
        }
    }
}

/// Does `fault` on `tcp`.
async fn misbehave(mut tcp: tokio::net::TcpStream, fault: Fault, seen: &Seen) {
    match fault {
        Fault::NeverReadThenClose { queued } => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
            let deadline = Instant::now() + Duration::from_secs(30);
            while unread(fd) < queued && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Fault::ResetAfter { bytes } => {
            let mut buf = vec![0u8; bytes];
            let _ = tcp.read_exact(&mut buf).await;
            seen.faulty_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            tcp.set_zero_linger().unwrap();
        }
    }
    seen.faults.fetch_add(1, Ordering::Relaxed);
    drop(tcp);
}

/// Bytes waiting unread in socket `fd`.
pub fn unread(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int for a socket the caller owns.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 {
        0
    } else {
        n as usize
    }
}

/// A stream whose reads after the first wait until `delay` after the first read.
struct SlowReads<S> {
    inner: S,
    delay: Option<Duration>,
    until: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    reads: u32,
}

impl<S> SlowReads<S> {
    fn new(inner: S, delay: Option<Duration>) -> Self {
        SlowReads {
            inner,
            delay,
            until: None,
            reads: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SlowReads<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.reads > 0 {
            if let Some(until) = this.until.as_mut() {
                std::task::ready!(until.as_mut().poll(cx));
            }
        }
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before && this.reads == 0 {
                this.reads = 1;
                this.until = this.delay.map(|d| Box::pin(tokio::time::sleep(d)));
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SlowReads<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
