//! The benchmark's line sink: a mutual-TLS receiver (rustls through tokio-rustls, client certificate
//! required) standing in for Devo. It counts lines and bytes and remembers when the first and
//! the last line came; it parses nothing beyond the LF, so it costs far less than the pipeline
//! (the runner measures it and reports it).
//!
//! On a clean close from the peer (close_notify, EOF) it closes its side too, which is the
//! relay's last delivery signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::procstat::now_ns;

/// What the sink has received since the last reset.
#[derive(Default)]
pub struct Counters {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    /// Wall-clock ns of the first read that held a line end (0: none yet).
    pub first_ns: AtomicU64,
    /// Wall-clock ns of the latest read that held a line end.
    pub last_ns: AtomicU64,
    /// TLS connections accepted so far (never reset).
    pub connections: AtomicU64,
    /// Connections refused in the handshake (never reset).
    pub handshake_failures: AtomicU64,
    /// The first line after a reset, for the report.
    pub sample: Mutex<Option<String>>,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub lines: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Counters {
    /// Zeroes lines, bytes and times.
    pub fn reset(&self) {
        self.lines.store(0, Ordering::SeqCst);
        self.bytes.store(0, Ordering::SeqCst);
        self.first_ns.store(0, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
        *self.sample.lock().expect("lock") = None;
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            lines: self.lines.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
            first_ns: self.first_ns.load(Ordering::SeqCst),
            last_ns: self.last_ns.load(Ordering::SeqCst),
        }
    }

    /// Counts one read.
    pub fn record(&self, data: &[u8]) {
        let lines = memchr::memchr_iter(b'\n', data).count() as u64;
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if lines > 0 {
            let now = now_ns();
            if self
                .first_ns
                .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let end = memchr::memchr(b'\n', data).unwrap_or(data.len());
                *self.sample.lock().expect("lock") =
                    Some(String::from_utf8_lossy(&data[..end.min(400)]).into_owned());
            }
            self.last_ns.store(now, Ordering::SeqCst);
            // Lines last: a waiter that sees the count sees the times too.
            self.lines.fetch_add(lines, Ordering::SeqCst);
        }
    }
}

/// Listens on `listen` (e.g. `127.0.0.1:0`) on a thread of its own with its own runtime,
/// serving as [`serve`] does; returns the port.
pub fn start(
    listen: &str,
    config: Arc<rustls::ServerConfig>,
    counters: Arc<Counters>,
) -> std::io::Result<u16> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let port = std_listener.local_addr()?.port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            serve(listener, config, counters).await;
        });
    });
    Ok(port)
}

/// Accepts TLS connections on `listener` forever, counting into `counters`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    counters: Arc<Counters>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("sink: handshake failed: {e}");
                    return;
                }
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) => {
                        // The peer closed cleanly: close our side too.
                        let _ = tls.shutdown().await;
                        return;
                    }
                    Ok(n) => counters.record(&buf[..n]),
                    Err(e) => {
                        eprintln!("sink: connection ended: {e}");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_and_keeps_first() {
        let c = Counters::default();
        c.record(b"a\nbb\n");
        c.record(b"ccc");
        c.record(b"\n");
        let s = c.snapshot();
        assert_eq!((s.lines, s.bytes), (3, 9));
        assert!(s.first_ns > 0 && s.last_ns >= s.first_ns);
        assert_eq!(c.sample.lock().unwrap().as_deref(), Some("a"));
        c.reset();
        assert_eq!(c.snapshot(), Snapshot::default());
    }
}
