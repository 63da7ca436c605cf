//! Process-level tests of the channel: the real `sluice-relay` binary, a stdout output, the
//! collector's `ChannelClient`. Checks the Devo lines byte for byte (date aside), idempotency
//! (also across a restart), refusals with their reasons, the gzip bomb, the token, the unix
//! socket listener, health/ready/metrics and a clean exit on SIGTERM.

use std::io::Write;
use std::time::Duration;

use crate::support::*;
use sluice_channel::client::ClientError;
use sluice_channel::encode::EncodedBatch;

const STDOUT: &str = "[[outputs]]\ntype = \"stdout\"\nhostname = \"testhost\"\n";

fn gz(data: &[u8]) -> bytes::Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    bytes::Bytes::from(e.finish().unwrap())
}

fn raw(body: bytes::Bytes, events: u64) -> EncodedBatch {
    EncodedBatch {
        body,
        events,
        raw_bytes: 0,
    }
}

#[tokio::test]
async fn stdout_lines_are_exact_and_keys_idempotent() {
    let (_d, dir) = tmp();
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", STDOUT));
    let client = relay.client(None);
    let events = [
        (
            "cloud.aws.cloudtrail.events",
            r#"{"eventName":"GetObject","n":1}"#,
        ),
        ("my.app.test", ""),
        ("my.app.a-b.c_d", "héllo wörld \t tab"),
    ];
    let c = client.send("prod-1", &batch(&events)).await.unwrap();
    assert_eq!((c.events, c.duplicate), (3, false));
    let lines = relay.wait_lines(3, Duration::from_secs(10));
    for (line, (tag, msg)) in lines.iter().zip(events) {
        assert_devo_line(line, "14", "testhost", tag, msg);
    }
    // The same key again: confirmed as a duplicate, not printed again.
    let c = client.send("prod-1", &batch(&events)).await.unwrap();
    assert_eq!((c.events, c.duplicate), (3, true));
    let c = client
        .send("prod-2", &batch(&[("my.app.test", "second")]))
        .await
        .unwrap();
    assert!(!c.duplicate);
    let lines = relay.wait_lines(4, Duration::from_secs(10));
    // The spool delivers in order: had the duplicate been stored, its lines would have come
    // before this one.
    assert_devo_line(&lines[3], "14", "testhost", "my.app.test", "second");
    let m = wait_metric(
        &relay.address,
        "sluice_relay_events_delivered_total{output=\"stdout\"}",
        |v| v >= 4,
        Duration::from_secs(10),
    );
    assert!(
        m.contains("sluice_relay_events_delivered_total{output=\"stdout\"} 4\n"),
        "{m}"
    );
    assert!(
        m.contains("sluice_relay_batches_duplicate_total 1\n"),
        "{m}"
    );
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let (_d, dir) = tmp();
    let config = spool_config(&dir.join("spool"), "", STDOUT);
    let relay = start(&dir, &config);
    let c = relay
        .client(None)
        .send("p-7", &batch(&[("my.app.x", "once")]))
        .await
        .unwrap();
    assert!(!c.duplicate);
    relay.wait_lines(1, Duration::from_secs(10));
    assert!(relay.terminate().success());

    let relay = start(&dir, &config);
    let c = relay
        .client(None)
        .send("p-7", &batch(&[("my.app.x", "once")]))
        .await
        .unwrap();
    assert_eq!((c.events, c.duplicate), (1, true));
    // A new batch after it: the spool delivers in order, so had the duplicate been stored,
    // its line would come first.
    relay
        .client(None)
        .send("p-8", &batch(&[("my.app.x", "after")]))
        .await
        .unwrap();
    let lines = relay.wait_lines(1, Duration::from_secs(10));
    assert_devo_line(&lines[0], "14", "testhost", "my.app.x", "after");
    assert!(relay.terminate().success());
}

async fn refused(
    client: &sluice_channel::client::ChannelClient,
    key: &str,
    b: EncodedBatch,
) -> (u16, String) {
    match client.send(key, &b).await {
        Err(ClientError::Refused { status, reason, .. }) => (status, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_batches_are_refused_with_their_reason() {
    let (_d, dir) = tmp();
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &format!("[limits]\nmax_event_bytes = 100\nmax_batch_bytes = 4194304\nmax_body_bytes = 1048576\n{STDOUT}"),
        ),
    );
    let client = relay.client(None);
    let (s, r) = refused(&client, "k1", raw(gz(b"my.app.ok fine\nbadtag hello\n"), 2)).await;
    assert_eq!(s, 400);
    assert!(r.starts_with("line 2: tag"), "{r}");
    let (s, r) = refused(&client, "k2", raw(gz(b"my.app.ok no newline"), 1)).await;
    assert_eq!(s, 400);
    assert!(r.contains("line 1") && r.contains("LF"), "{r}");
    let (s, r) = refused(&client, "k3", raw(gz(b"my.app.ok a\rb\n"), 1)).await;
    assert_eq!(s, 400);
    assert!(r.contains("CR"), "{r}");
    let (s, r) = refused(
        &client,
        "k4",
        raw(bytes::Bytes::from_static(b"plain text\n"), 1),
    )
    .await;
    assert_eq!(s, 400);
    assert!(r.contains("gzip"), "{r}");
    let (s, r) = refused(&client, "k5", raw(gz(b""), 0)).await;
    assert_eq!(s, 400);
    assert!(r.contains("empty"), "{r}");
    let (s, r) = refused(&client, "k6", raw(gz(b"my.app.ok a\n"), 5)).await;
    assert_eq!(s, 400);
    assert!(r.contains("X-Sluice-Events"), "{r}");
    let (s, _) = refused(&client, "bad key!", batch(&[("my.app.ok", "x")])).await;
    assert_eq!(s, 400);
    let long = format!("my.app.ok {}\n", "x".repeat(101));
    let (s, r) = refused(&client, "k7", raw(gz(long.as_bytes()), 1)).await;
    assert_eq!(s, 413);
    assert!(r.contains("max_event_bytes"), "{r}");
    // Incompressible body over max_body_bytes.
    let noise: Vec<u8> = (0..1_200_000).map(|_| fastrand::u8(..)).collect();
    let (s, r) = refused(&client, "k8", raw(bytes::Bytes::from(noise), 1)).await;
    assert_eq!(s, 413);
    assert!(r.contains("max_body_bytes"), "{r}");
    // A gzip bomb: ~100 KiB that inflates to 100 MiB of valid lines.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = "my.app.bomb boom boom boom boom boom\n".repeat(28_000);
    for _ in 0..100 {
        e.write_all(chunk.as_bytes()).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 1_048_576, "{}", bomb.len());
    let (s, r) = refused(&client, "k9", raw(bytes::Bytes::from(bomb), 2_800_000)).await;
    assert_eq!(s, 413);
    assert!(r.contains("max_batch_bytes"), "{r}");

    // Nothing of the refused batches was printed; a good batch still flows.
    client
        .send("k10", &batch(&[("my.app.ok", "after")]))
        .await
        .unwrap();
    let lines = relay.wait_lines(1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1);
    assert_devo_line(&lines[0], "14", "testhost", "my.app.ok", "after");
    let (status, metrics) = http_get(&relay.address, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sluice_relay_batches_refused_total{reason=\"too_large\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_relay_batches_refused_total{reason=\"bad_request\"} 7"),
        "{metrics}"
    );
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let (_d, dir) = tmp();
    let relay = start_env(
        &dir,
        &spool_config(&dir.join("spool"), "token = \"${RELAY_TOKEN}\"", STDOUT),
        &[("RELAY_TOKEN", "hunter2-secret")],
    );
    let b = batch(&[("my.app.t", "x")]);
    let (s, _) = refused(&relay.client(None), "t1", b.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = refused(&relay.client(Some("wrong")), "t1", b.clone()).await;
    assert_eq!(s, 401);
    relay
        .client(Some("hunter2-secret"))
        .send("t1", &b)
        .await
        .unwrap();
    relay.wait_lines(1, Duration::from_secs(10));
    assert!(
        !relay.stderr_text().contains("hunter2"),
        "the token is never logged"
    );
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn health_ready_metrics() {
    let (_d, dir) = tmp();
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", STDOUT));
    assert_eq!(http_get(&relay.address, "/health").0, 200);
    assert_eq!(http_get(&relay.address, "/ready").0, 200);
    relay
        .client(None)
        .send("m1", &batch(&[("my.app.m", "a"), ("my.app.m", "b")]))
        .await
        .unwrap();
    relay.wait_lines(2, Duration::from_secs(10));
    // The output counts a batch after it wrote and flushed its lines: the lines can be seen
    // before the counter moves, so wait for it.
    let m = wait_metric(
        &relay.address,
        "sluice_relay_events_delivered_total{output=\"stdout\"}",
        |v| v >= 2,
        Duration::from_secs(10),
    );
    assert!(m.contains("sluice_relay_batches_accepted_total 1\n"), "{m}");
    assert!(m.contains("sluice_relay_events_accepted_total 2\n"), "{m}");
    assert!(
        m.contains("sluice_relay_events_delivered_total{output=\"stdout\"} 2\n"),
        "{m}"
    );
    assert_eq!(http_get(&relay.address, "/metrics").0, 200);
    assert!(m.contains("# TYPE sluice_relay_spool_bytes gauge"), "{m}");
    assert_eq!(http_get(&relay.address, "/nope").0, 404);
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn unix_socket_listener() {
    let (_d, dir) = tmp();
    let sock = dir.join("relay.sock");
    let config = format!(
        "[listen]\naddress = \"unix:{}\"\naddress_file = \"ADDRESS_FILE\"\n[spool]\ndir = \"{}\"\n{STDOUT}",
        sock.display(),
        dir.join("spool").display()
    );
    let relay = start(&dir, &config);
    assert_eq!(relay.address, format!("unix:{}", sock.display()));
    relay
        .client(None)
        .send("u1", &batch(&[("my.app.unix", "via socket")]))
        .await
        .unwrap();
    let lines = relay.wait_lines(1, Duration::from_secs(10));
    assert_devo_line(&lines[0], "14", "testhost", "my.app.unix", "via socket");
    assert!(relay.terminate().success());
    assert!(!sock.exists(), "socket file removed on exit");
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let (_d, dir) = tmp();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        format!(
            "[spool]\ndir = \"{}\"\nmax_byts = 5\n{STDOUT}",
            dir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-relay"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_byts"), "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn two_outputs_each_get_every_line() {
    let (_d, dir) = tmp();
    let file = dir.join("events.log");
    let outputs = format!(
        "{STDOUT}\n[[outputs]]\ntype = \"file\"\nhostname = \"filehost\"\nseverity = 3\npath = \"{}\"\n",
        file.display()
    );
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", &outputs));
    relay
        .client(None)
        .send(
            "f1",
            &batch(&[("my.app.f", "to both"), ("my.app.f", "twice")]),
        )
        .await
        .unwrap();
    let lines = relay.wait_lines(2, Duration::from_secs(10));
    assert_devo_line(&lines[1], "14", "testhost", "my.app.f", "twice");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read(&file).unwrap_or_default();
        if text.iter().filter(|&&b| b == b'\n').count() >= 2 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "file output incomplete"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let file_lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert_devo_line(file_lines[0], "11", "filehost", "my.app.f", "to both");
    assert_devo_line(file_lines[1], "11", "filehost", "my.app.f", "twice");
    assert!(relay.terminate().success());
}
