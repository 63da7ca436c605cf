//! The metrics listener: a tiny HTTP server for `GET /metrics` (the text of
//! [`super::render`]), `GET /health` (200 while the process answers at all) and `GET /ready`
//! (200 once the pipeline polls its queues, 503 before that and once shutdown began). These are
//! what `sluice health [--ready]` probes.
//!
//! It serves; it counts nothing, and it decides nothing about readiness: the pipeline sets
//! the flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serves `GET /metrics`, `/health` and `/ready` (from `ready`) on `address` until
/// `shutdown` fires.
pub async fn serve(
    address: &str,
    ready: Arc<AtomicBool>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                let _ = answer(stream, ready).await;
            });
        }
    });
    Ok(local)
}

/// A deliberately minimal HTTP/1.0-style answer: one request per connection, GET only.
async fn answer(mut stream: tokio::net::TcpStream, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap_or(Ok(0))?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let ready = ready.load(Ordering::Relaxed);
    let (status, body) = match path {
        "/metrics" => ("200 OK", super::render()),
        "/health" => ("200 OK", "ok\n".to_string()),
        "/ready" if ready => ("200 OK", "ready\n".to_string()),
        "/ready" => ("503 Service Unavailable", "not ready\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
