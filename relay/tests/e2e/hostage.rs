//! The channel cannot be held hostage by a local process (issue 14): stalled uploads, slow-loris
//! header dribblers and idle connections beyond the cap do not keep a real producer's batch
//! out, and a body over the caps or the budget is answered (413, 503) rather than reset.
//!
//! Real relay process, raw sockets on 127.0.0.1 for the hostile clients, the collector's
//! `ChannelClient` for the real producer. Timeouts are configured short so each test takes a
//! few seconds; every wait polls with a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;
use sluice_channel::client::ClientError;

const STDOUT: &str = "[[outputs]]\ntype = \"stdout\"\nhostname = \"testhost\"\n";

/// The headers of a batch whose body is `length` bytes (or chunked, when `None`).
fn batch_head(key: &str, length: Option<u64>) -> String {
    let length = match length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    format!(
        "POST /v1/batches HTTP/1.1\r\nHost: relay\r\nContent-Encoding: gzip\r\n\
         Idempotency-Key: {key}\r\n{length}\r\n"
    )
}

fn connect(address: &str) -> TcpStream {
    let s = TcpStream::connect(address).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// True once the relay closed `s` (EOF or reset); false if it is still open after `timeout`.
/// Whatever the relay answered before closing is thrown away.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Reads one HTTP answer from `s`: its status and body (the relay's answers carry a
/// Content-Length).
fn read_answer(s: &mut TcpStream, timeout: Duration) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no whole answer: {got:?}");
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                return (status, body.to_string());
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("connection closed before a whole answer: {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("answer not read ({e}); got {got:?}"),
        }
    }
}

fn metric(relay: &Relay, series: &str) -> i64 {
    metric_value(&http_get(&relay.address, "/metrics").1, series).unwrap_or(-1)
}

/// Uploads that stall in the middle of their body hold only the bytes they sent: a producer's
/// batch is stored at once while they are still open; they are closed after
/// `body_read_timeout_ms` and give their part of the budget back.
#[tokio::test]
async fn stalled_uploads_do_not_block_a_producer() {
    let (_d, dir) = tmp();
    let listen = "body_read_timeout_ms = 5000\n";
    let relay = start(&dir, &spool_config(&dir.join("spool"), listen, STDOUT));
    // Eight uploads announcing the largest body (16 MiB each: 128 MiB, twice the budget, if
    // it were reserved from Content-Length) send 1 MiB and stall.
    let mut stalled: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = connect(&relay.address);
            s.write_all(batch_head(&format!("stall-{i}"), Some(16 << 20)).as_bytes())
                .unwrap();
            s.write_all(&vec![0u8; 1 << 20]).unwrap();
            s
        })
        .collect();
    wait_metric(
        &relay.address,
        "sluice_relay_channel_body_budget_bytes",
        |v| v >= 8 << 20,
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let c = relay
        .client(None)
        .send("producer-1", &batch(&[("my.app.test", "through")]))
        .await
        .expect("the producer's batch is stored while the uploads stall");
    assert_eq!((c.events, c.duplicate), (1, false));
    assert_eq!(
        metric(
            &relay,
            "sluice_relay_channel_reaped_total{reason=\"body_timeout\"}"
        ),
        0,
        "stored while the stalled uploads were still open ({:?})",
        started.elapsed()
    );
    relay.wait_lines(1, Duration::from_secs(10));
    // The relay closes them itself (an answer, then the close) and frees their budget.
    for s in &mut stalled {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a stalled upload stays open"
        );
    }
    let m = wait_metric(
        &relay.address,
        "sluice_relay_channel_reaped_total{reason=\"body_timeout\"}",
        |v| v == 8,
        Duration::from_secs(10),
    );
    assert_eq!(
        metric_value(&m, "sluice_relay_channel_body_budget_bytes"),
        Some(0),
        "{m}"
    );
    assert!(relay.terminate().success());
}

/// When the budget is taken, a batch is answered 503 with Retry-After (read by the producer,
/// not a reset); once the stalled uploads that hold it are closed, the same batch is stored.
#[tokio::test]
async fn a_full_budget_answers_503_then_the_batch_goes_through() {
    let (_d, dir) = tmp();
    let listen = "body_read_timeout_ms = 4000\nmin_body_bytes_per_sec = 0\n";
    let relay = start(&dir, &spool_config(&dir.join("spool"), listen, STDOUT));
    // Four uploads of 16 MiB - 1 byte, one byte short of their end: the whole 64 MiB budget.
    let _stalled: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = connect(&relay.address);
            s.write_all(batch_head(&format!("stall-{i}"), Some(16 << 20)).as_bytes())
                .unwrap();
            s.write_all(&vec![0u8; (16 << 20) - 1]).unwrap();
            s
        })
        .collect();
    wait_metric(
        &relay.address,
        "sluice_relay_channel_body_budget_bytes",
        |v| v >= 64 << 20,
        Duration::from_secs(20),
    );
    let client = relay.client(None);
    let events = batch(&[("my.app.test", "after the stall")]);
    match client.send("producer-1", &events).await {
        Err(ClientError::Busy {
            status,
            retry_after,
            reason,
            ..
        }) => {
            assert_eq!(status, 503, "{reason}");
            assert!(retry_after.is_some());
            assert!(reason.contains("in flight"), "{reason}");
        }
        other => panic!("expected 503 while the budget is taken: {other:?}"),
    }
    wait_metric(
        &relay.address,
        "sluice_relay_channel_reaped_total{reason=\"body_timeout\"}",
        |v| v == 4,
        Duration::from_secs(10),
    );
    let c = client.send("producer-1", &events).await.unwrap();
    assert_eq!((c.events, c.duplicate), (1, false));
    assert!(relay.terminate().success());
}

/// Slow-loris: connections that dribble their headers are closed after
/// `header_timeout_ms`, while an idle keep-alive connection (one request done) keeps its
/// longer `idle_timeout_ms`.
#[tokio::test]
async fn slow_loris_header_dribblers_are_closed() {
    let (_d, dir) = tmp();
    let listen = "header_timeout_ms = 700\nidle_timeout_ms = 20000\n";
    let relay = start(&dir, &spool_config(&dir.join("spool"), listen, STDOUT));
    // A producer's pooled connection: one request done, then idle.
    let mut idle = connect(&relay.address);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle, Duration::from_secs(5)).0, 200);
    let started = Instant::now();
    let mut loris: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&relay.address);
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            s.write_all(b"POST /v1/batches HTTP/1.1\r\nHost: relay\r\n")
                .unwrap();
            s
        })
        .collect();
    let deadline = started + Duration::from_secs(10);
    let mut open = loris.len();
    while open > 0 {
        assert!(
            Instant::now() < deadline,
            "{open} dribblers still open after 10 s"
        );
        open = 0;
        for s in &mut loris {
            // One more header line every round: always moving, never done.
            let alive = s.write_all(b"X-Slow: 1\r\n").is_ok() && !closed_within(s, Duration::ZERO);
            open += usize::from(alive);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "closed before the header timeout: {took:?}"
    );
    let m = wait_metric(
        &relay.address,
        "sluice_relay_channel_reaped_total{reason=\"header_timeout\"}",
        |v| v == 20,
        Duration::from_secs(5),
    );
    assert_eq!(
        metric_value(&m, "sluice_relay_channel_reaped_total{reason=\"idle\"}"),
        Some(0),
        "{m}"
    );
    // The idle connection is still open, and still serves a request.
    assert!(!closed_within(&mut idle, Duration::from_millis(200)));
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle, Duration::from_secs(5)).0, 200);
    assert!(relay.terminate().success());
}

/// More idle connections than `max_connections`: at the cap the longest-idle one is closed
/// for each new connection, so a producer's batch gets through at once; those that never send
/// a request are closed after `header_timeout_ms` anyway.
#[tokio::test]
async fn idle_connections_beyond_the_cap_do_not_keep_a_batch_out() {
    let (_d, dir) = tmp();
    let listen = "max_connections = 8\nheader_timeout_ms = 3000\n";
    let relay = start(&dir, &spool_config(&dir.join("spool"), listen, STDOUT));
    // Keep-alive idle connections (one request each, as a pool would), then bare ones.
    let mut idle: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(&relay.address);
            s.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
                .unwrap();
            assert_eq!(read_answer(&mut s, Duration::from_secs(5)).0, 200);
            s
        })
        .collect();
    idle.extend((0..24).map(|_| connect(&relay.address)));
    let started = Instant::now();
    let c = relay
        .client(None)
        .send(
            "producer-1",
            &batch(&[("my.app.test", "past the idle ones")]),
        )
        .await
        .expect("the batch gets through while idle connections fill the cap");
    assert_eq!((c.events, c.duplicate), (1, false));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the batch waited {took:?}: longer than the header timeout, so nothing was evicted"
    );
    relay.wait_lines(1, Duration::from_secs(10));
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "an idle connection stays open"
        );
    }
    let m = wait_metric(
        &relay.address,
        "sluice_relay_channel_reaped_total{reason=\"evicted\"}",
        |v| v >= 25,
        Duration::from_secs(10),
    );
    let at_cap = metric_value(&m, "sluice_relay_channel_at_cap_total").unwrap_or(0);
    assert!(
        at_cap >= 25,
        "the cap was reached for each connection past it:\n{m}"
    );
    assert!(
        metric_value(&m, "sluice_relay_channel_connections_open").unwrap_or(99) <= 8,
        "{m}"
    );
    assert!(
        relay.stderr_text().contains("listen.max_connections"),
        "reaching the cap is logged"
    );
    eprintln!("batch stored after {took:?} with 32 idle connections and a cap of 8");
    assert!(relay.terminate().success());
}

/// A body over `max_body_bytes` is answered 413 and the client reads it, whether its length
/// is announced or it comes chunked; the connection then serves the next request.
#[tokio::test]
async fn an_oversize_body_gets_a_413_the_client_reads() {
    let (_d, dir) = tmp();
    let config = format!("[limits]\nmax_body_bytes = 1048576\n{STDOUT}");
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", &config));
    let body = vec![7u8; 3 << 20];

    let mut s = connect(&relay.address);
    s.write_all(batch_head("big-1", Some(body.len() as u64)).as_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    let (status, answer) = read_answer(&mut s, Duration::from_secs(10));
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut s, Duration::from_secs(5)).0, 200);

    let mut s = connect(&relay.address);
    s.write_all(batch_head("big-2", None).as_bytes()).unwrap();
    for chunk in body.chunks(64 * 1024) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let (status, answer) = read_answer(&mut s, Duration::from_secs(10));
    assert_eq!(status, 413, "{answer}");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut s, Duration::from_secs(5)).0, 200);

    let m = http_get(&relay.address, "/metrics").1;
    assert_eq!(
        metric_value(
            &m,
            "sluice_relay_batches_refused_total{reason=\"too_large\"}"
        ),
        Some(2),
        "{m}"
    );
    assert!(relay.terminate().success());
}
