//! Delivery confirmation for the network outputs. Devo's syslog endpoint never answers, so the
//! only proof that its program *read* the bytes (not merely that its kernel holds them) is a
//! graceful close that the peer answers after ours:
//!
//! - TLS: we send close_notify (and FIN), then the peer's close_notify must come; rustls gives
//!   end of stream only then (a TCP close without close_notify is `UnexpectedEof`: failed).
//! - TCP: we half-close (FIN), the peer's FIN must come, and then every byte we sent, our FIN
//!   included, must be acknowledged. A peer program that closes with unread data makes its
//!   kernel answer with a reset; bytes that arrive after the peer closed are answered with a
//!   reset and never acknowledged. Either shows here as an error.
//! - In both: the peer must not have ended its side before our close started.
//!
//! Anything else (reset, TLS alert, timeout of `close_timeout`, a close from the peer first)
//! means none of the connection's writes is confirmed; the worker resends them all. What stays
//! outside: a peer that read the bytes and answered the close, then lost them (e.g. crashed
//! before forwarding them). This module does the closing exchange only; it decides nothing
//! about the spool.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::net::{Conn, PeerEnd};
use crate::metrics::ConfirmFailure;

/// Why a connection's writes were not confirmed.
#[derive(Debug, Clone)]
pub(crate) struct Unconfirmed {
    pub(crate) why: ConfirmFailure,
    pub(crate) reason: String,
}

impl Unconfirmed {
    fn new(why: ConfirmFailure, reason: impl Into<String>) -> Self {
        Unconfirmed {
            why,
            reason: reason.into(),
        }
    }
}

/// Closes `conn` gracefully within `after` and says whether the peer confirmed every write on
/// it. The connection is dropped at the end (its reader stops, the socket closes).
pub(crate) async fn close(mut conn: Conn, after: Duration) -> Result<(), Unconfirmed> {
    match timeout(after, exchange(&mut conn)).await {
        Ok(r) => r,
        Err(_) => Err(Unconfirmed::new(
            ConfirmFailure::Timeout,
            format!("the peer did not answer our close within {after:?} (close_timeout_ms)"),
        )),
    }
}

async fn exchange(conn: &mut Conn) -> Result<(), Unconfirmed> {
    // The peer must not have closed or failed on its own.
    if let Some(end) = conn.peer_end() {
        let (why, reason) = end.failure();
        return Err(Unconfirmed::new(why, reason));
    }
    let write = |e: std::io::Error| Unconfirmed::new(ConfirmFailure::Write, format!("close: {e}"));
    conn.writer.flush().await.map_err(write)?;
    conn.closing.store(true, Ordering::SeqCst);
    // tokio-rustls sends close_notify, then shuts the TCP write side down; plain TCP sends FIN.
    conn.writer.shutdown().await.map_err(write)?;
    match conn.wait_peer_end().await {
        PeerEnd::Eof { after_ours: true } => {}
        end => {
            let (why, reason) = end.failure();
            return Err(Unconfirmed::new(why, reason));
        }
    }
    if !conn.tls {
        wait_acknowledged(conn.fd).await?;
    }
    Ok(())
}

/// Linux `TCP_CLOSE` (include/net/tcp_states.h): the socket is gone, e.g. after a reset.
const TCP_CLOSE: u8 = 7;

/// Waits until the peer's TCP stack acknowledged every byte written to `fd`, our FIN included
/// (`TIOCOUTQ`, i.e. `SIOCOUTQ`, counts the FIN's sequence number too). A socket that is closed
/// while bytes are outstanding was reset: those bytes were never taken.
async fn wait_acknowledged(fd: RawFd) -> Result<(), Unconfirmed> {
    let mut pause = Duration::from_micros(200);
    loop {
        let (queued, state) = send_queue(fd)
            .map_err(|e| Unconfirmed::new(ConfirmFailure::Write, format!("close: {e}")))?;
        if queued == 0 {
            return Ok(());
        }
        if state == TCP_CLOSE {
            return Err(Unconfirmed::new(
                ConfirmFailure::Reset,
                format!("the peer reset the connection with {queued} bytes unacknowledged"),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Bytes not yet acknowledged, and the TCP state, of socket `fd`.
fn send_queue(fd: RawFd) -> std::io::Result<(i32, u8)> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `fd` is the socket of a connection the caller still owns (its write half keeps
    // the stream alive for the whole call); TIOCOUTQ writes one c_int.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; TCP_INFO writes at most `len` bytes into the zeroed struct we own.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((queued, info.tcpi_state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetSettings;
    use crate::metrics::Metrics;
    use crate::output::net::NetSink;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    fn sink(address: String) -> NetSink {
        let settings = Arc::new(NetSettings {
            address,
            tls: None,
            connections: 1,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            tls_settle: Duration::ZERO,
            idle_reconnect: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(3600),
            confirm_bytes: 1 << 20,
            confirm_interval: Duration::from_secs(1),
        });
        let metrics = Arc::new(Metrics::new(&["o".to_string()]));
        NetSink::new("o".into(), settings, None, metrics)
    }

    /// A listener whose first connection is handed to `peer`.
    async fn server<F, Fut>(peer: F) -> String
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            peer(s).await;
        });
        addr
    }

    /// Connects, writes `len` bytes, closes; the outcome of the close.
    async fn write_and_close(addr: String, len: usize) -> Result<(), Unconfirmed> {
        let mut s = sink(addr);
        s.before_batch().await.unwrap();
        let data = vec![b'x'; len];
        // A write may fail already when the peer is quick to reset; that is a failure too.
        if let Err(e) = s.write_all(&data).await {
            return Err(Unconfirmed::new(ConfirmFailure::Write, e.to_string()));
        }
        s.flush().await.unwrap();
        let conn = s.conn.take().unwrap();
        close(conn, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn a_peer_that_reads_to_eof_and_closes_confirms() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let addr = server(|mut s| async move {
            let mut data = Vec::new();
            s.read_to_end(&mut data).await.unwrap();
            s.shutdown().await.unwrap();
            let _ = tx.send(data.len());
        })
        .await;
        write_and_close(addr, 300_000).await.unwrap();
        assert_eq!(rx.await.unwrap(), 300_000);
    }

    #[tokio::test]
    async fn a_peer_that_closes_first_does_not_confirm() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = server(|mut s| async move {
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).await.unwrap();
            // Reads what we send, but closes on its own before our close.
            let _ = s.shutdown().await;
            let _ = rx.await;
        })
        .await;
        let mut s = sink(addr);
        s.before_batch().await.unwrap();
        s.write_all(b"0123456789").await.unwrap();
        let mut conn = s.conn.take().unwrap();
        assert!(matches!(
            conn.wait_peer_end().await,
            PeerEnd::Eof { after_ours: false }
        ));
        let e = close(conn, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(e.why, ConfirmFailure::PeerClosed, "{e:?}");
        drop(tx);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_times_out() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = server(|s| async move {
            let _ = rx.await; // holds the socket, never reads
            drop(s);
        })
        .await;
        let mut s = sink(addr);
        s.before_batch().await.unwrap();
        s.write_all(&[b'y'; 10_000]).await.unwrap();
        let conn = s.conn.take().unwrap();
        let e = close(conn, Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(e.why, ConfirmFailure::Timeout, "{e:?}");
        drop(tx);
    }

    #[tokio::test]
    async fn a_peer_that_closes_with_unread_data_resets() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = server(|mut s| async move {
            let mut buf = [0u8; 1024];
            s.read_exact(&mut buf).await.unwrap();
            let _ = rx.await;
            drop(s); // unread data: the kernel answers with RST
        })
        .await;
        let mut s = sink(addr);
        s.before_batch().await.unwrap();
        s.write_all(&[b'z'; 50_000]).await.unwrap();
        let mut conn = s.conn.take().unwrap();
        let _ = tx.send(());
        match conn.wait_peer_end().await {
            PeerEnd::Failed { why, .. } => assert_eq!(why, ConfirmFailure::Reset),
            other => panic!("{other:?}"),
        }
        let e = close(conn, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(e.why, ConfirmFailure::Reset, "{e:?}");
    }

    #[tokio::test]
    async fn a_peer_that_reads_but_never_answers_the_close_times_out() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = server(|mut s| async move {
            let mut data = Vec::new();
            s.read_to_end(&mut data).await.unwrap();
            let _ = rx.await; // saw our FIN, never sends its own
        })
        .await;
        let e = write_and_close(addr, 1000).await.unwrap_err();
        assert_eq!(e.why, ConfirmFailure::Timeout, "{e:?}");
        drop(tx);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_idle_is_replaced() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move {
            let (first, _) = l.accept().await.unwrap();
            drop(first); // the server hangs up at once
            let (mut second, _) = l.accept().await.unwrap();
            let mut data = Vec::new();
            second.read_to_end(&mut data).await.unwrap();
            second.shutdown().await.unwrap();
            data
        });
        let mut s = sink(addr);
        s.before_batch().await.unwrap();
        s.conn.as_mut().unwrap().wait_peer_end().await;
        // Nothing awaits confirmation on it: it is replaced before the batch is written.
        s.before_batch().await.unwrap();
        s.write_all(b"kept\n").await.unwrap();
        close(s.conn.take().unwrap(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(accept.await.unwrap(), b"kept\n");
    }

    #[tokio::test]
    async fn connect_errors_name_the_phase_and_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = sink(format!("127.0.0.1:{port}"));
        let e = s.before_batch().await.unwrap_err();
        assert_eq!(e.phase(), crate::metrics::Phase::Connect);
        assert!(
            e.to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}")),
            "{e}"
        );
    }
}
