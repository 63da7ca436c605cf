//! Issue 12: `sluice health` against the real collector (moto, the real relay): `/health`
//! answers as soon as the metrics listener runs, `--ready` only once the collector polls (it
//! waits for the relay's limits first), exit 1 after SIGKILL, exit 2 for a configuration
//! without `metrics_address`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sluice_testkit::health::{code, expect, stderr, BOUND, SLACK};

use crate::support::*;

/// `sluice health --config config [extra…]`, with its wall time.
fn health(config: &Path, extra: &[&str]) -> (Output, Duration) {
    sluice_testkit::health::run(collector_binary(), config, extra)
}

/// Runs `health` until it exits `want` (or the deadline passes); the last run.
fn until(config: &Path, extra: &[&str], want: i32, timeout: Duration) -> Output {
    let mut last = None;
    poll(timeout, || {
        let (out, _) = health(config, extra);
        let done = code(&out) == want;
        last = Some(out);
        done
    });
    last.expect("health ran at least once")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_follow_the_real_collector() {
    let moto = Moto::start();
    let wired = wire(&moto, "health").await;
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    // No relay yet: the collector serves its metrics but waits for the relay's limits before
    // it polls, so it is alive and not ready.
    let mut collector = start_collector(dir.path(), &moto, &wired, relay_port, "");
    let config = dir.path().join("collector.toml");
    let metrics = collector.metrics.clone().expect("metrics address");
    let address = metrics.trim_start_matches("http://");

    let out = until(&config, &[], 0, Duration::from_secs(30));
    expect(&out, 0, &format!("GET /health on {address}: healthy"));
    let (out, took) = health(&config, &["--ready"]);
    expect(&out, 1, "answered 503");
    assert!(took < BOUND, "took {took:?}");

    let _relay = start_relay(dir.path(), relay_port, "");
    let out = until(&config, &["--ready"], 0, Duration::from_secs(30));
    expect(&out, 0, &format!("GET /ready on {address}: healthy"));
    // Ready is set after the poll loops start, which log `polling` first.
    assert!(
        poll(Duration::from_secs(5), || !collector
            .stderr
            .matching(&["polling"])
            .is_empty()),
        "ready, but no input polls"
    );

    collector.kill9();
    let (out, took) = health(&config, &["--timeout", "1"]);
    expect(&out, 1, "unhealthy");
    assert!(took < Duration::from_secs(1) + SLACK, "took {took:?}");
    let (out, _) = health(&config, &["--ready"]);
    expect(&out, 1, "unhealthy");
    // The input's AWS keys are in the configuration; no line of health shows them.
    assert!(!stderr(&out).contains("testing"));
}

#[test]
fn health_without_metrics_address_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    // A configuration the collector runs with, except that it serves no metrics.
    std::fs::write(
        &config,
        "[relay]\nurl = \"http://127.0.0.1:9\"\n\n[collector]\nid = \"test\"\n\n\
         [[inputs]]\nname = \"test\"\nbase_url = \"http://127.0.0.1:9/000000000000/q\"\n\
         region = \"us-east-1\"\n",
    )
    .unwrap();
    let (out, _) = health(&config, &[]);
    expect(&out, 2, "health needs [collector] metrics_address");
    let (out, _) = health(&config, &["--ready"]);
    expect(&out, 2, "health needs [collector] metrics_address");

    let (out, _) = health(&dir.path().join("missing.toml"), &[]);
    expect(&out, 2, "cannot probe: configuration");
}

#[test]
fn health_has_help_and_running_still_needs_config() {
    let help = Command::new(collector_binary())
        .args(["health", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for needle in ["--ready", "--timeout", "metrics_address", "exit"] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let none = Command::new(collector_binary()).output().unwrap();
    assert_eq!(none.status.code(), Some(2), "no --config is a usage error");
}
