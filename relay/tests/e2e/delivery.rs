//! Issue 4, tests 2 and 4 with the real binary and real sockets: the receiver is down for a
//! while and comes back (every batch arrives, at least once, and the relay's memory stays
//! bounded while the spool holds the data); the spool fills, the relay answers 429 with
//! Retry-After and /ready says 503, a producer that backs off loses nothing, and everything
//! flows again once the output drains.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::*;
use sluice_channel::client::ClientError;

fn relay_output(port: u16, extra: &str) -> String {
    format!(
        "[[outputs]]\ntype = \"relay\"\nname = \"inhouse\"\nhostname = \"testhost\"\n\
         address = \"127.0.0.1:{port}\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\n{extra}\n"
    )
}

/// Message bodies that do not compress well, so the spool really holds the bytes.
fn noisy(key: &str, i: usize, len: usize) -> String {
    let mut s = format!("{key}-{i} ");
    while s.len() < len {
        s.push_str(&format!("{:016x}", fastrand::u64(..)));
    }
    s
}

fn rss_kib(pid: u32) -> u64 {
    sluice_testkit::procstat::rss(pid).expect("the relay's VmRSS") / 1024
}

#[tokio::test]
async fn receiver_down_then_back_every_batch_arrives_memory_bounded() {
    let (_d, dir) = tmp();
    let port = free_port();
    let relay = start(
        &dir,
        &spool_config(&dir.join("spool"), "", &relay_output(port, "")),
    );
    let client = relay.client(None);
    let rss_before = rss_kib(relay.pid());
    let mut want = HashSet::new();
    let batches = 48;
    let per_batch = 1000;
    for b in 0..batches {
        let key = format!("out-{b}");
        let msgs: Vec<String> = (0..per_batch).map(|i| noisy(&key, i, 1200)).collect();
        let events: Vec<(&str, &str)> =
            msgs.iter().map(|m| ("my.app.outage", m.as_str())).collect();
        for i in 0..per_batch {
            want.insert(format!("{key}-{i}"));
        }
        let c = client.send(&key, &batch(&events)).await.unwrap();
        assert_eq!(c.events, per_batch as u64);
    }
    let (_, metrics) = http_get(&relay.address, "/metrics");
    let spool_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_relay_spool_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        spool_bytes > 25 << 20,
        "the spool holds the data: {spool_bytes}"
    );
    let rss_after = rss_kib(relay.pid());
    assert!(
        (rss_after.saturating_sub(rss_before)) * 1024 < spool_bytes / 2,
        "memory grew by {} KiB while the spool holds {} KiB",
        rss_after - rss_before,
        spool_bytes / 1024
    );
    // The worker is backing off between connection attempts (the gauge drops to 0 while it
    // tries again, so wait for a moment when it backs off).
    wait_metric(
        &relay.address,
        "sluice_relay_output_retrying{output=\"inhouse\"}",
        |v| v == 1,
        Duration::from_secs(10),
    );
    assert!(relay
        .stderr_text()
        .contains(&format!("connect to 127.0.0.1:{port}")));

    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = ids(&receiver.lines());
        if want.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived",
            want.intersection(&got).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Delivered batches leave the spool.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = http_get(&relay.address, "/metrics");
        let bytes: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("sluice_relay_spool_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        if bytes < 4 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "spool not freed: {bytes}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn full_spool_pushes_back_and_nothing_is_lost() {
    let (_d, dir) = tmp();
    let port = free_port();
    let config = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\naddress_file = \"ADDRESS_FILE\"\n\
         [spool]\ndir = \"{}\"\nmax_bytes = 4194304\nretry_after_secs = 1\n\
         [limits]\nmax_body_bytes = 262144\n{}",
        dir.join("spool").display(),
        relay_output(port, "")
    );
    let relay = start(&dir, &config);
    let client = std::sync::Arc::new(relay.client(None));
    let make = |b: usize| {
        let key = format!("full-{b}");
        let msgs: Vec<String> = (0..100).map(|i| noisy(&key, i, 1500)).collect();
        let events: Vec<(&str, &str)> = msgs.iter().map(|m| ("my.app.full", m.as_str())).collect();
        (key, batch(&events))
    };
    // Fill the spool until the relay pushes back.
    let mut accepted = Vec::new();
    let busy = loop {
        let (key, b) = make(accepted.len());
        match client.send(&key, &b).await {
            Ok(_) => accepted.push(key),
            Err(e @ ClientError::Busy { .. }) => break e,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted.len() < 100, "the spool never filled");
    };
    assert!(accepted.len() >= 10, "{}", accepted.len());
    match &busy {
        ClientError::Busy { status, .. } => assert_eq!(*status, 429),
        _ => unreachable!(),
    }
    assert_eq!(busy.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(http_get(&relay.address, "/ready").0, 503);

    // A producer that honours Retry-After keeps trying the same keys while the receiver is
    // down, then comes back.
    let total = accepted.len() + 10;
    let producer = {
        let client = client.clone();
        let first = accepted.len();
        tokio::spawn(async move {
            let mut refusals = 0;
            for b in first..total {
                let key = format!("full-{b}");
                let msgs: Vec<String> = (0..100).map(|i| noisy(&key, i, 1500)).collect();
                let events: Vec<(&str, &str)> =
                    msgs.iter().map(|m| ("my.app.full", m.as_str())).collect();
                let body = batch(&events);
                loop {
                    match client.send(&key, &body).await {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            refusals += 1;
                            tokio::time::sleep(e.retry_after().unwrap_or(Duration::from_secs(1)))
                                .await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            refusals
        })
    };
    // The producer is refused at least once before the receiver comes back (the first
    // refusal above counted one).
    let series = "sluice_relay_batches_refused_total{reason=\"spool_full\"}";
    let address = relay.address.clone();
    tokio::task::spawn_blocking(move || {
        wait_metric(&address, series, |v| v >= 2, Duration::from_secs(20))
    })
    .await
    .unwrap();
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    let refusals = producer.await.unwrap();
    assert!(refusals >= 1);
    let want: HashSet<String> = (0..total)
        .flat_map(|b| (0..100).map(move |i| format!("full-{b}-{i}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = ids(&receiver.lines());
        if want.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived",
            want.intersection(&got).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&relay.address, "/ready").0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, m) = http_get(&relay.address, "/metrics");
    assert!(
        !m.contains("sluice_relay_batches_refused_total{reason=\"spool_full\"} 0"),
        "{m}"
    );
    assert!(relay.terminate().success());
}
