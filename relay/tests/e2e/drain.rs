//! `listen.drain_timeout_secs`: on SIGTERM a draining relay delivers its whole spool before it
//! exits (a scaled-in pod whose disk may not come back), keeps accepting from a producer that
//! is still connected, and gives up after its timeout leaving the rest in the spool; without it
//! (the default) SIGTERM leaves undelivered batches in the spool for the next start.
//!
//! Real relay processes, a real TCP receiver (the `relay` output), real signals.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::*;

/// A relay output to `127.0.0.1:port` that retries fast and confirms every 200 ms, with
/// `listen` as extra `[listen]` keys and `extra` as extra output keys.
fn config(dir: &std::path::Path, port: u16, listen: &str, extra: &str) -> String {
    spool_config(
        &dir.join("spool"),
        listen,
        &format!(
            "[[outputs]]\ntype = \"relay\"\nhostname = \"testhost\"\naddress = \"127.0.0.1:{port}\"\n\
             backoff_initial_ms = 50\nbackoff_max_ms = 200\nconfirm_interval_ms = 200\n{extra}\n"
        ),
    )
}

/// Sends `batches` batches of `per` events under keys `{prefix}{b}`, each answered 200;
/// returns the messages.
async fn send(relay: &Relay, prefix: &str, batches: usize, per: usize) -> HashSet<String> {
    let client = relay.client(None);
    send_with(&client, prefix, batches, per).await
}

async fn send_with(
    client: &sluice_channel::client::ChannelClient,
    prefix: &str,
    batches: usize,
    per: usize,
) -> HashSet<String> {
    let mut want = HashSet::new();
    for b in 0..batches {
        let key = format!("{prefix}{b}");
        let msgs: Vec<String> = (0..per).map(|i| format!("{key}-e{i}")).collect();
        let events: Vec<(&str, &str)> = msgs.iter().map(|m| ("my.app.drain", m.as_str())).collect();
        client.send(&key, &batch(&events)).await.unwrap();
        want.extend(msgs);
    }
    want
}

/// The messages the receiver holds (the text after the tag's `": "`).
fn got(receiver: &Receiver) -> HashSet<String> {
    receiver
        .lines()
        .iter()
        .filter_map(|l| {
            let text = String::from_utf8_lossy(l);
            Some(text.split_once(": ")?.1.trim_end().to_string())
        })
        .collect()
}

/// SIGTERM, then the exit status and how long the exit took.
fn terminate_timed(relay: Relay) -> (std::process::ExitStatus, Duration) {
    relay.proc.signal(libc::SIGTERM);
    exit_of(relay)
}

/// Waits (at most 90 s) for the relay, signalled already, to exit: its status and how long
/// that took.
fn exit_of(mut relay: Relay) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let status = sluice_testkit::process::wait_exit(&mut relay.proc.child, Duration::from_secs(90));
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delivers_the_whole_spool_before_exit() {
    let (_d, dir) = tmp();
    let port = free_port();
    // Nobody listens on the port yet: every batch stays in the spool.
    let relay = start(
        &dir,
        &config(
            &dir,
            port,
            "shutdown_timeout_secs = 5\ndrain_timeout_secs = 60",
            // Slow delivery, so that most of the spool is still there when SIGTERM comes.
            "max_events_per_sec = 4000",
        ),
    );
    let want = send(&relay, "d", 20, 500).await;
    // The receiver comes back; SIGTERM before the relay could deliver it all (10,000 events at
    // 4,000 a second).
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    let stderr = relay.proc.stderr.clone();
    let (status, _) = terminate_timed(relay);
    assert!(status.success(), "{status:?}\n{}", stderr.text());
    let arrived = got(&receiver);
    let missing = want.difference(&arrived).count();
    assert_eq!(
        missing,
        0,
        "{missing} events missing at exit\n{}",
        stderr.text()
    );
    let log = stderr.text();
    assert!(log.contains("draining the spool"), "{log}");
    assert!(log.contains("spool drained"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_a_receiver_that_comes_back_and_accepts_from_a_connected_producer() {
    let (_d, dir) = tmp();
    let port = free_port();
    let relay = start(
        &dir,
        &config(
            &dir,
            port,
            "shutdown_timeout_secs = 20\ndrain_timeout_secs = 60",
            "",
        ),
    );
    let client = relay.client(None);
    let mut want = send_with(&client, "a", 10, 200).await;
    // SIGTERM while the receiver is down and a producer is still connected (the collector in
    // the same pod, finishing its last objects): its next batches are still taken.
    relay.proc.signal(libc::SIGTERM);
    wait_for_log(&relay, "still accepting", Duration::from_secs(20));
    want.extend(send_with(&client, "late", 5, 200).await);
    // The producer exits: the relay stops accepting and drains, waiting for the receiver.
    drop(client);
    wait_for_log(&relay, "draining the spool", Duration::from_secs(20));
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    let stderr = relay.proc.stderr.clone();
    let (status, _) = exit_of(relay);
    assert!(status.success(), "{status:?}\n{}", stderr.text());
    let missing = want.difference(&got(&receiver)).count();
    assert_eq!(
        missing,
        0,
        "{missing} events missing at exit\n{}",
        stderr.text()
    );
    assert!(stderr.text().contains("spool drained"), "{}", stderr.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_after_its_timeout_and_keeps_the_rest() {
    let (_d, dir) = tmp();
    let port = free_port();
    let listen = "shutdown_timeout_secs = 5\ndrain_timeout_secs = 2";
    let relay = start(&dir, &config(&dir, port, listen, ""));
    let want = send(&relay, "t", 10, 100).await;
    // The receiver stays down: the drain times out, logs what was left, exits 0.
    let stderr = relay.proc.stderr.clone();
    let (status, took) = terminate_timed(relay);
    assert!(status.success(), "{status:?}\n{}", stderr.text());
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let log = stderr.text();
    assert!(log.contains("drain timed out"), "{log}");
    assert!(log.contains("undelivered=relay="), "{log}");
    // What was left is delivered by the next start on the same spool.
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    let relay = start(&dir, &config(&dir, port, listen, ""));
    wait_all(&receiver, &want, Duration::from_secs(30));
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drain_sigterm_leaves_the_spool_for_the_next_start() {
    let (_d, dir) = tmp();
    let port = free_port();
    let relay = start(&dir, &config(&dir, port, "", "max_events_per_sec = 2000"));
    let want = send(&relay, "n", 10, 500).await;
    // The receiver is back, delivery is slow (5,000 events at 2,000 a second): SIGTERM stops
    // at once (the batch being written is finished and confirmed), it does not wait for the
    // spool to empty.
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), None);
    receiver.wait_lines(1, Duration::from_secs(20));
    let stderr = relay.proc.stderr.clone();
    let (status, _) = terminate_timed(relay);
    assert!(status.success(), "{status:?}\n{}", stderr.text());
    let early = want.intersection(&got(&receiver)).count();
    assert!(early < want.len(), "all {early} delivered before exit");
    assert!(!stderr.text().contains("draining"), "{}", stderr.text());
    // The next start delivers the rest.
    let relay = start(&dir, &config(&dir, port, "", ""));
    wait_all(&receiver, &want, Duration::from_secs(30));
    assert!(relay.terminate().success());
}

/// Waits until the relay's stderr holds `needle`.
fn wait_for_log(relay: &Relay, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !relay.stderr_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} within {timeout:?}\n{}",
            relay.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the receiver holds every message of `want`.
fn wait_all(receiver: &Receiver, want: &HashSet<String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let arrived = got(receiver);
        let missing = want.difference(&arrived).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events missing",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
