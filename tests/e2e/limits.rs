//! The collector and the relay agree on limits: one event over the relay's cap never costs the
//! other events of its object, whether the collector knew the cap at start-up (it lowers its
//! own) or the relay shrank it later (the 413 is repaired by a re-split). Real moto, real
//! binaries, counted at the relay's stdout and in the collector's metrics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

const TAG: &str = "my.app.sluice.test";

/// `n` numbered lines, and after line `at` each of `long` (one line each).
fn object(n: usize, at: usize, long: &[String]) -> (Vec<u8>, Vec<String>) {
    let mut text = String::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let line = format!("event {i:05}");
        text.push_str(&line);
        text.push('\n');
        lines.push(line);
        if i == at {
            for l in long {
                text.push_str(l);
                text.push('\n');
            }
        }
    }
    (text.into_bytes(), lines)
}

/// A 200 KiB line starting with `prefix`.
fn long_line(prefix: &str) -> String {
    let mut l = format!("{prefix}-");
    while l.len() < 200 * 1024 {
        l.push_str("0123456789abcdef");
    }
    l
}

/// Checks that every numbered line arrived once and each long line once as its first
/// `cap` bytes (`None`: not at all); nothing else arrived.
fn assert_arrived(relay: &Proc, numbered: &[String], long: &[String], cap: Option<usize>) {
    let seen = relay_messages(relay, None, TAG);
    let missing: Vec<&String> = numbered.iter().filter(|l| !seen.contains_key(*l)).collect();
    assert!(
        missing.is_empty(),
        "{} lost: {:?}…",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut expected: BTreeMap<String, usize> = numbered.iter().map(|l| (l.clone(), 1)).collect();
    if let Some(cap) = cap {
        for l in long {
            expected.insert(l[..cap].to_string(), 1);
        }
    }
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicated, 0, "duplicates");
    assert_eq!(seen.len(), expected.len(), "other lines arrived");
    assert!(
        seen == expected,
        "the long lines did not arrive as expected"
    );
}

async fn one_long_line_among_5000(oversize: &str) {
    let moto = Moto::start();
    let wired = wire(&moto, &format!("long-{oversize}")).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "[limits]\nmax_event_bytes = 65536\n");
    let collector = start_collector(
        dir.path(),
        &moto,
        &wired,
        port,
        &format!("max_event_bytes = 1048576\noversize = \"{oversize}\"\n"),
    );
    let long = vec![long_line("LONG")];
    let (body, numbered) = object(5000, 2500, &long);
    wired.put("big/5001.log", gzip(&body)).await;

    let want = 5000 + usize::from(oversize == "truncate");
    let arrived = wait_for(Duration::from_secs(90), || {
        relay_messages(&relay, None, TAG).len() >= want
    })
    .await;
    assert!(
        arrived,
        "{} of {want} arrived",
        relay_messages(&relay, None, TAG).len()
    );
    // The message is deleted, every received message handled, the relay printed all it took.
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(30)).await,
        "not settled: queue {:?}, collector (received, handled) {:?}",
        wired.depth().await,
        collector_messages(&collector)
    );
    let cap = (oversize == "truncate").then_some(65536);
    assert_arrived(&relay, &numbered, &long, cap);
    let text = collector.metrics_text();
    let counted = |name| metric_sum(&text, name, &[("input", "test")]);
    if oversize == "truncate" {
        assert_eq!(counted("sluice_events_truncated_total"), 1);
    } else {
        assert_eq!(counted("sluice_events_dropped_total"), 1);
    }
    assert_eq!(counted("sluice_events_confirmed_total"), want as u64);
    assert_eq!(counted("sluice_batches_refused_total"), 0);
    assert_eq!(
        counted("sluice_batches_resplit_total"),
        0,
        "nothing refused: the cap was known"
    );
    // The lowered cap is said once, with the agreed limits.
    assert_eq!(
        collector
            .stderr
            .matching(&[
                "lowered to fit the relay's limits",
                "inputs.test.max_event_bytes",
                "65536"
            ])
            .len(),
        1
    );
    assert_eq!(
        collector
            .stderr
            .matching(&["limits agreed with the relay"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_line_is_cut_to_the_relays_cap_and_its_5000_neighbours_arrive() {
    one_long_line_among_5000("truncate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_line_is_dropped_by_the_drop_rule_and_its_5000_neighbours_arrive() {
    one_long_line_among_5000("drop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_with_smaller_limits_gets_its_413_repaired_and_loses_nothing() {
    let moto = Moto::start();
    let wired = wire(&moto, "shrunk").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut relay = start_relay(dir.path(), port, "");
    let collector = start_collector(dir.path(), &moto, &wired, port, "");
    let agreed = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&[
                "limits agreed with the relay",
                "relay_max_event_bytes=1048576",
            ])
            .is_empty()
    })
    .await;
    assert!(agreed, "no limits agreed");

    // Same spool, same port, a 64 KiB event cap: the collector still cuts at 1 MiB.
    assert!(relay.terminate().success());
    let relay = start_relay(dir.path(), port, "[limits]\nmax_event_bytes = 65536\n");
    let limits = http(&format!("http://127.0.0.1:{port}"), "GET", "/v1/limits");
    assert!(limits.contains("\"max_event_bytes\":65536"), "{limits}");

    let long: Vec<String> = ["AAA", "BBB", "CCC"].iter().map(|p| long_line(p)).collect();
    let (body, numbered) = object(2000, 1000, &long);
    wired.put("shrunk.log", body).await;
    let arrived = wait_for(Duration::from_secs(90), || {
        relay_messages(&relay, None, TAG).len() >= 2003
    })
    .await;
    assert!(
        arrived,
        "{} of 2003 arrived",
        relay_messages(&relay, None, TAG).len()
    );
    assert!(
        settled(&wired, &collector, Some(&relay), Duration::from_secs(30)).await,
        "not settled: queue {:?}, collector (received, handled) {:?}",
        wired.depth().await,
        collector_messages(&collector)
    );
    assert_arrived(&relay, &numbered, &long, Some(65536));
    let text = collector.metrics_text();
    let counted = |name, labels: &[(&str, &str)]| metric_sum(&text, name, labels);
    assert!(
        counted(
            "sluice_batches_resplit_total",
            &[("input", "test"), ("status", "413")]
        ) >= 1
    );
    assert_eq!(
        counted(
            "sluice_resplit_events_total",
            &[("input", "test"), ("action", "truncated")]
        ),
        3
    );
    assert_eq!(counted("sluice_batches_refused_total", &[]), 0);
    assert_eq!(counted("sluice_events_confirmed_total", &[]), 2003);
    assert!(!collector
        .stderr
        .matching(&["the relay's limits changed since start-up"])
        .is_empty());
}

/// A relay requiring `token` on 127.0.0.1:`port`, stdout output.
fn relay_with_token(dir: &Path, port: u16, token: &str) -> Proc {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n\n[spool]\ndir = \"{}\"\n\n\
             [[outputs]]\ntype = \"stdout\"\nhostname = \"testhost\"\n",
            dir.join("spool").display()
        ),
    )
    .unwrap();
    let mut relay = Proc::spawn(&binary("sluice-relay"), &config, "relay");
    relay.metrics = Some(format!("http://127.0.0.1:{port}"));
    assert!(
        (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "relay did not start"
    );
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_beyond_repair_is_a_clear_error_and_keeps_its_message() {
    let moto = Moto::start();
    let wired = wire(&moto, "denied").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _relay = relay_with_token(dir.path(), port, "tok-RIGHT-123");
    // The caps need no token, batches do: the collector starts, every batch gets 401.
    let metrics_port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"tok-WRONG-456\"\n\n\
             [collector]\nid = \"test\"\nmetrics_address = \"127.0.0.1:{metrics_port}\"\n\n\
             [[inputs]]\nname = \"test\"\nbase_url = \"{}\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"{}\"\naws_access_key_id = \"testing\"\n\
             aws_secret_access_key = \"testing\"\nsqs_wait_timeout = 1\ntag = \"{TAG}\"\n",
            wired.queue_url, moto.endpoint
        ),
    )
    .unwrap();
    let mut collector = Proc::spawn(collector_binary(), &config, "collector");
    collector.metrics = Some(format!("http://127.0.0.1:{metrics_port}"));
    let polling = wait_for(Duration::from_secs(30), || {
        !collector.stderr.matching(&["s3:TestEvent"]).is_empty()
    })
    .await;
    assert!(polling, "no s3:TestEvent handled");
    assert!(wired.wait_empty(Duration::from_secs(20)).await);

    wired.put("denied.log", b"one\ntwo\n".to_vec()).await;
    let refused = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&[
                "ERROR",
                &wired.queue_url,
                "denied",
                "denied.log",
                "refused",
                "401",
            ])
            .is_empty()
    })
    .await;
    assert!(refused, "no error line for the refused batch");
    // Not deleted: it waits for its retry (then the poison policy).
    let (visible, in_flight) = wired.depth().await;
    assert_eq!(visible + in_flight, 1, "the refused message was deleted");
    assert!(collector.counter("sluice_batches_refused_total") >= 1);
    assert!(
        collector.stderr.matching(&["tok-WRONG-456"]).is_empty()
            && collector.stderr.matching(&["tok-RIGHT-123"]).is_empty(),
        "a token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_waiting_for_the_relays_limits_stops_on_sigterm() {
    // No relay and no AWS call before the limits are known: the queue URL is never used.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nurl = \"http://127.0.0.1:{port}\"\n\n[[inputs]]\nname = \"test\"\n\
             base_url = \"http://127.0.0.1:9/queue\"\nregion = \"us-east-1\"\ntag = \"{TAG}\"\n"
        ),
    )
    .unwrap();
    let mut collector = Proc::spawn(collector_binary(), &config, "collector");
    let waiting = wait_for(Duration::from_secs(30), || {
        !collector
            .stderr
            .matching(&["relay limits unavailable, will retry"])
            .is_empty()
    })
    .await;
    assert!(waiting, "the collector did not wait for the relay");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &collector.child.id().to_string()])
        .status();
    let mut status = None;
    let stopped = wait_for(Duration::from_secs(20), || {
        status = collector.child.try_wait().ok().flatten();
        status.is_some()
    })
    .await;
    assert!(
        stopped,
        "the collector did not stop while waiting for the relay"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}
