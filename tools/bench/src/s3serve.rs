//! A minimal object server that answers S3 GetObject (path style, any bucket and key) from
//! one in-memory object: `Range: bytes=a-b`, `If-Match` on the ETag, `Content-Range`, and an
//! optional cap on each response's throughput, a model of the per-request bandwidth of real S3
//! (moto cannot serve this benchmark: it reads the whole object for every ranged GET).
//!
//! Used only by `bench-fetch`; the collector's own fetch code (`sluice::object::fetch`) and the real
//! AWS SDK are the client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Bytes per body frame.
const FRAME: usize = 64 * 1024;

/// The object and the server's behaviour.
pub struct Object {
    pub data: Bytes,
    pub etag: String,
    /// Cap per response, bytes per second (0: none).
    pub rate: u64,
    /// GET requests served.
    pub requests: AtomicU64,
}

/// A response body that hands out `data` in frames, no faster than `rate`.
struct Paced {
    data: Bytes,
    sent: usize,
    rate: u64,
    start: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        if self.sent >= self.data.len() {
            return Poll::Ready(None);
        }
        if self.rate > 0 {
            let due = self.start + Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
            if due > Instant::now() + Duration::from_millis(1) {
                let mut sleep = Box::pin(tokio::time::sleep_until(due.into()));
                if sleep.as_mut().poll(cx).is_pending() {
                    self.sleep = Some(sleep);
                    return Poll::Pending;
                }
            }
        }
        let end = (self.sent + FRAME).min(self.data.len());
        let chunk = self.data.slice(self.sent..end);
        self.sent = end;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse().ok()?
    };
    (a < len && a <= b).then_some((a, b.min(len - 1)))
}

async fn handle(
    object: Arc<Object>,
    req: Request<Incoming>,
) -> Result<Response<Paced>, Infallible> {
    object.requests.fetch_add(1, Ordering::Relaxed);
    let len = object.data.len() as u64;
    let empty = |status: StatusCode| {
        let mut r = Response::new(Paced {
            data: Bytes::new(),
            sent: 0,
            rate: 0,
            start: Instant::now(),
            sleep: None,
        });
        *r.status_mut() = status;
        Ok(r)
    };
    if let Some(m) = req.headers().get("if-match") {
        if m.as_bytes() != object.etag.as_bytes() {
            return empty(StatusCode::PRECONDITION_FAILED);
        }
    }
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(None) => return empty(StatusCode::RANGE_NOT_SATISFIABLE),
    };
    let data = if len == 0 {
        Bytes::new()
    } else {
        object.data.slice(start as usize..=end as usize)
    };
    let n = data.len();
    let mut r = Response::new(Paced {
        data,
        sent: 0,
        rate: object.rate,
        start: Instant::now(),
        sleep: None,
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-length", n.into());
    h.insert("etag", object.etag.parse().expect("etag header"));
    h.insert("accept-ranges", "bytes".parse().expect("header"));
    h.insert(
        "content-type",
        "application/octet-stream".parse().expect("header"),
    );
    h.insert(
        "last-modified",
        "Mon, 01 Jan 2024 00:00:00 GMT".parse().expect("header"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            "content-range",
            format!("bytes {start}-{end}/{len}")
                .parse()
                .expect("header"),
        );
    }
    Ok(r)
}

/// Serves `object` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, object: Arc<Object>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let object = object.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(object.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=5-", 100), Some((5, 99)));
        assert_eq!(parse_range("bytes=100-101", 100), None);
    }
}
