//! sluice-test-receiver: a mutual-TLS syslog receiver standing in for Devo in the container
//! tests (tests/containers/). It accepts TLS connections whose client certificate is signed by
//! the given CA and appends every complete line it reads to one file, flushed after each read,
//! so a test on the host can count lines while the relay still sends. It answers the relay's
//! close_notify with its own, which is what confirms a connection's batches to the relay
//! (docs/relay.md, "At least once").
//!
//! It does not: parse or check the lines, inject faults (that is `receiver::Receiver`'s job),
//! or keep anything in memory beyond one connection's unfinished line.
//!
//!     sluice-test-receiver --listen 0.0.0.0:6514 --cert server.crt --key server.key \
//!         --client-ca chain.crt --out /data/lines.log

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sluice_testkit::tls::{server_config, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: sluice-test-receiver [--listen ADDR] --cert PEM --key PEM \
                     --client-ca PEM --out FILE";

struct Args {
    listen: String,
    tls: ServerTls,
    out: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut listen = None;
    let (mut cert, mut key, mut ca, mut out) = (None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--cert" => cert = Some(PathBuf::from(value)),
            "--key" => key = Some(PathBuf::from(value)),
            "--client-ca" => ca = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let need = |v: Option<PathBuf>, name: &str| v.ok_or_else(|| format!("{name} is required"));
    Ok(Args {
        listen: listen.unwrap_or_else(|| "127.0.0.1:6514".into()),
        tls: ServerTls {
            cert: need(cert, "--cert")?,
            key: need(key, "--key")?,
            client_ca: need(ca, "--client-ca")?,
        },
        out: need(out, "--out")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sluice-test-receiver: {e}");
            std::process::exit(2);
        }
    };
    let config = match server_config(&args.tls) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-test-receiver: TLS configuration: {e}");
            std::process::exit(2);
        }
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .unwrap_or_else(|e| {
            eprintln!("sluice-test-receiver: {}: {e}", args.out.display());
            std::process::exit(2);
        });
    let file = Arc::new(Mutex::new(file));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .unwrap_or_else(|e| {
            eprintln!("sluice-test-receiver: bind {}: {e}", args.listen);
            std::process::exit(2);
        });
    eprintln!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // As PID 1 in a container no signal has a default action: exit on SIGTERM ourselves.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = term.recv() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let file = file.clone();
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => serve(tls, &file, peer).await,
                Err(e) => eprintln!("{peer}: handshake: {e}"),
            }
        });
    }
}

/// Reads one connection to its end, appending its complete lines to `file`; answers a
/// clean close (close_notify) with ours.
async fn serve<S>(mut s: S, file: &Mutex<std::fs::File>, peer: std::net::SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    // The connection's unfinished last line: lines of two connections never interleave.
    let mut pending = Vec::new();
    let mut lines = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => {
                if !pending.is_empty() {
                    // A line without its LF is still what was sent: keep it, visibly cut.
                    pending.push(b'\n');
                    append(file, &pending);
                }
                let _ = s.shutdown().await;
                eprintln!("{peer}: closed cleanly after {lines} lines");
                return;
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                if let Some(end) = memchr::memrchr(b'\n', &pending) {
                    lines += memchr::memchr_iter(b'\n', &pending[..=end]).count() as u64;
                    append(file, &pending[..=end]);
                    pending.drain(..=end);
                }
            }
            Err(e) => {
                eprintln!("{peer}: {e} after {lines} lines");
                return;
            }
        }
    }
}

fn append(file: &Mutex<std::fs::File>, bytes: &[u8]) {
    let mut f = file.lock().expect("the output file's lock");
    if let Err(e) = f.write_all(bytes).and_then(|()| f.flush()) {
        // Losing lines here would make the test's count wrong, not pass it: stop loudly.
        eprintln!("sluice-test-receiver: writing: {e}");
        std::process::exit(1);
    }
}
