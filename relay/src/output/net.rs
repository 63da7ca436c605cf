//! One connection of a `devo` or `relay` output: TCP, optionally TLS (tls.rs), with the life
//! cycle DEVO.md asks for.
//!
//! - Connect: resolve the name, try every address (IPv4 and IPv6) within `connect_timeout`.
//! - Handshake within `handshake_timeout`; then a short settle read (`tls_settle_ms`), because
//!   under TLS 1.3 a server refuses a client certificate only after the client's handshake has
//!   finished: waiting for its alert here keeps the first batch from being written into a
//!   connection that is already refused.
//! - Before each batch: reconnect when the connection was idle longer than `idle_reconnect`
//!   (Devo's balancer drops idle connections) or is older than `max_connection_age`, and poll
//!   the read side once so a connection the server already closed is replaced, not written to.
//! - Every write and flush within `write_timeout`; a flush also waits until the peer's TCP
//!   stack acknowledged every byte (the send queue is empty), so a batch leaves the spool only
//!   once a reset can no longer lose it.
//! - Close: flush, TLS close_notify, half close, read until EOF within `close_timeout`: the
//!   server's EOF is the only sign that it consumed everything.
//!
//! Errors name the phase and the peer. It does not retry: the worker owns backoff and resend.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::tls::{explain, TlsClient};
use super::OutputError;
use crate::config::NetSettings;
use crate::metrics::Metrics;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    /// The TCP socket under the (maybe TLS) stream, to read its send queue.
    fd: std::os::fd::RawFd,
    peer: SocketAddr,
    opened: Instant,
    last_used: Instant,
}

/// One pooled connection slot of a network output.
pub struct NetSink {
    output: String,
    settings: Arc<NetSettings>,
    tls: Option<TlsClient>,
    metrics: Arc<Metrics>,
    conn: Option<Conn>,
}

impl NetSink {
    pub fn new(
        output: String,
        settings: Arc<NetSettings>,
        tls: Option<TlsClient>,
        metrics: Arc<Metrics>,
    ) -> Self {
        NetSink {
            output,
            settings,
            tls,
            metrics,
            conn: None,
        }
    }

    fn dest(&self) -> String {
        match &self.conn {
            Some(c) => format!("{} ({})", self.settings.address, c.peer),
            None => self.settings.address.clone(),
        }
    }

    /// Makes sure a fresh, live connection is there before a batch is written.
    pub async fn before_batch(&mut self) -> Result<(), OutputError> {
        if let Some(c) = &mut self.conn {
            let now = Instant::now();
            let idle = now.duration_since(c.last_used);
            let age = now.duration_since(c.opened);
            if idle > self.settings.idle_reconnect || age > self.settings.max_connection_age {
                tracing::debug!(output = %self.output, idle_ms = idle.as_millis() as u64, age_s = age.as_secs(), "reconnecting an idle or old connection");
                self.close().await;
            } else if let Some(why) = probe(&mut c.stream).await {
                tracing::info!(output = %self.output, peer = %c.peer, reason = %why, "the server closed the connection; reconnecting");
                self.drop_conn();
            }
        }
        if self.conn.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), OutputError> {
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
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let server_name = tls.server_name.to_str().into_owned();
                let handshake_timeout = self.settings.handshake_timeout;
                let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
                let mut s = timeout(handshake_timeout, handshake)
                    .await
                    .map_err(|_| OutputError::HandshakeTimeout {
                        address: format!("{address} ({peer})"),
                        after: handshake_timeout,
                    })?
                    .map_err(|e| OutputError::Handshake {
                        address: format!("{address} ({peer})"),
                        reason: explain(&e, &server_name),
                    })?;
                // TLS 1.3: a refused client certificate shows up as an alert after the
                // handshake; give the server a moment to send it.
                if !self.settings.tls_settle.is_zero() {
                    let mut buf = [0u8; 512];
                    match timeout(self.settings.tls_settle, s.read(&mut buf)).await {
                        Err(_) => {}
                        Ok(Ok(0)) => {
                            return Err(OutputError::Handshake {
                                address: format!("{address} ({peer})"),
                                reason: "the server closed the connection right after the \
                                         handshake (client certificate refused?)"
                                    .into(),
                            })
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return Err(OutputError::Handshake {
                                address: format!("{address} ({peer})"),
                                reason: explain(&e, &server_name),
                            })
                        }
                    }
                }
                Box::new(s)
            }
        };
        let m = self.metrics.output(&self.output);
        m.connects.inc();
        m.connections_open.add(1);
        tracing::info!(output = %self.output, %address, %peer, tls = self.tls.is_some(), "connected");
        let now = Instant::now();
        self.conn = Some(Conn {
            stream,
            fd,
            peer,
            opened: now,
            last_used: now,
        });
        Ok(())
    }

    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), OutputError> {
        let dest = self.dest();
        let after = self.settings.write_timeout;
        let Some(c) = &mut self.conn else {
            return Err(OutputError::Write {
                dest,
                source: std::io::Error::new(std::io::ErrorKind::NotConnected, "not connected"),
            });
        };
        let r = timeout(after, c.stream.write_all(data)).await;
        c.last_used = Instant::now();
        match r {
            Err(_) => Err(OutputError::WriteTimeout { dest, after }),
            Ok(Err(source)) => Err(OutputError::Write { dest, source }),
            Ok(Ok(())) => Ok(()),
        }
    }

    pub async fn flush(&mut self) -> Result<(), OutputError> {
        let dest = self.dest();
        let after = self.settings.write_timeout;
        let Some(c) = &mut self.conn else {
            return Ok(());
        };
        let fd = c.fd;
        let r = timeout(after, async {
            c.stream.flush().await?;
            wait_until_acknowledged(fd).await
        })
        .await;
        c.last_used = Instant::now();
        match r {
            Err(_) => Err(OutputError::WriteTimeout { dest, after }),
            Ok(Err(source)) => Err(OutputError::Write { dest, source }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Forgets a broken connection without the closing exchange.
    pub fn drop_conn(&mut self) {
        if self.conn.take().is_some() {
            self.metrics.output(&self.output).connections_open.add(-1);
        }
    }

    /// Graceful close: flush, close_notify, half close, read until EOF (bounded).
    pub async fn close(&mut self) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        self.metrics.output(&self.output).connections_open.add(-1);
        let after = self.settings.close_timeout;
        let peer = c.peer;
        let result = timeout(after, async {
            c.stream.flush().await?;
            // tokio-rustls sends close_notify, then shuts the TCP write side down.
            c.stream.shutdown().await?;
            let mut buf = [0u8; 4096];
            loop {
                if c.stream.read(&mut buf).await? == 0 {
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) if is_benign_close(&e) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("close timed out after {after:?} waiting for EOF")),
        };
        match failure {
            None => tracing::debug!(output = %self.output, %peer, "connection closed"),
            Some(reason) => {
                self.metrics
                    .output(&self.output)
                    .error(crate::metrics::Phase::Close);
                tracing::warn!(output = %self.output, %peer, %reason, "close: {}", OutputError::Close { dest: format!("{} ({peer})", self.settings.address), reason: reason.clone() });
            }
        }
    }
}

/// Waits until the peer's TCP stack acknowledged every byte written to `fd`.
///
/// A flush only hands bytes to the kernel: if the connection then breaks (a balancer reset,
/// a network loss) what sat in the send queue is gone, and the batch must not have left the
/// spool. So a batch counts as delivered only once the send queue is empty, which on Linux
/// (`TIOCOUTQ`, i.e. `SIOCOUTQ` for a TCP socket) means sent and acknowledged. Devo's syslog
/// endpoint sends nothing back, so this is the strongest signal short of closing. The caller
/// bounds the wait with the write timeout; an error or a timeout resends the batch.
async fn wait_until_acknowledged(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: `fd` is the socket of a connection this sink still owns (the stream holding
        // it lives in `self.conn` for the whole call), and TIOCOUTQ writes one c_int.
        let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if queued == 0 {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// Servers often close without their own close_notify, or reset after ours: not a failure.
fn is_benign_close(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::NotConnected
    )
}

/// Polls the read side once without waiting: `Some(reason)` when the peer has closed.
async fn probe(stream: &mut Box<dyn Stream>) -> Option<String> {
    let mut buf = [0u8; 512];
    poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut **stream).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                Poll::Ready(Some("end of stream".to_string()))
            }
            // Devo never sends data; ignore anything that comes.
            Poll::Ready(Ok(())) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(e.to_string())),
        }
    })
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn settings(address: String, idle: Duration) -> Arc<NetSettings> {
        Arc::new(NetSettings {
            address,
            tls: None,
            connections: 1,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            tls_settle: Duration::ZERO,
            idle_reconnect: idle,
            max_connection_age: Duration::from_secs(3600),
        })
    }

    fn sink(address: String, idle: Duration) -> (NetSink, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&["o".to_string()]));
        (
            NetSink::new("o".into(), settings(address, idle), None, metrics.clone()),
            metrics,
        )
    }

    /// Accepts connections; each reads to EOF and reports (connection number, bytes).
    async fn server() -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<(usize, Vec<u8>)>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let _ = s.read_to_end(&mut data).await;
                    let _ = s.shutdown().await;
                    let _ = tx.send((n, data));
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn idle_connection_is_closed_gracefully_and_replaced() {
        let (addr, mut rx) = server().await;
        let (mut s, metrics) = sink(addr, Duration::from_millis(50));
        s.before_batch().await.unwrap();
        s.write_all(b"one\n").await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Idle past the limit: the first connection is closed (the server sees EOF) first.
        s.before_batch().await.unwrap();
        let (n, data) = rx.recv().await.unwrap();
        assert_eq!((n, data.as_slice()), (0, &b"one\n"[..]));
        s.write_all(b"two\n").await.unwrap();
        s.flush().await.unwrap();
        s.close().await;
        let (n, data) = rx.recv().await.unwrap();
        assert_eq!((n, data.as_slice()), (1, &b"two\n"[..]));
        assert_eq!(metrics.output("o").connects.get(), 2);
        assert_eq!(metrics.output("o").connections_open.get(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_written_to() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (mut s, metrics) = sink(addr, Duration::from_secs(30));
        let accept = tokio::spawn(async move {
            let (first, _) = l.accept().await.unwrap();
            drop(first); // the server hangs up at once
            let (mut second, _) = l.accept().await.unwrap();
            let mut data = Vec::new();
            second.read_to_end(&mut data).await.unwrap();
            data
        });
        s.before_batch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The probe sees the EOF and reconnects before the batch is written.
        s.before_batch().await.unwrap();
        s.write_all(b"kept\n").await.unwrap();
        s.flush().await.unwrap();
        s.close().await;
        assert_eq!(accept.await.unwrap(), b"kept\n");
        assert_eq!(metrics.output("o").connects.get(), 2);
    }

    #[tokio::test]
    async fn connect_errors_name_the_phase_and_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (mut s, _) = sink(format!("127.0.0.1:{port}"), Duration::from_secs(30));
        let e = s.before_batch().await.unwrap_err();
        assert_eq!(e.phase(), crate::metrics::Phase::Connect);
        assert!(
            e.to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}")),
            "{e}"
        );
    }
}
