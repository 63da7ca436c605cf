//! Issue 12: `sluice-relay health` against the real relay process: exit 0 while it serves
//! (TCP with a fixed port, port 0 through the address file, a unix socket; `/health` and
//! `--ready`), 1 once it was SIGKILLed, 2 for a configuration it cannot use. Each run is the
//! real binary, timed against its deadline.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sluice_testkit::health::{expect, stderr, BOUND, SLACK};

use crate::support::*;

/// `sluice-relay health --config config [extra…]`, with its wall time.
fn health(config: &Path, extra: &[&str]) -> (Output, Duration) {
    sluice_testkit::health::run(Path::new(env!("CARGO_BIN_EXE_sluice-relay")), config, extra)
}

const STDOUT: &str = "[[outputs]]\ntype = \"stdout\"\nhostname = \"testhost\"\n";

#[test]
fn health_is_0_while_the_relay_serves_and_1_after_sigkill() {
    let (_d, dir) = tmp();
    let port = free_port();
    let config = format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\naddress_file = \"ADDRESS_FILE\"\n\
         token = \"s3cret-token\"\n\n[spool]\ndir = \"{}\"\n\n{STDOUT}",
        dir.join("spool").display()
    );
    let relay = start(&dir, &config);
    let config = dir.join("relay.toml");

    let (out, took) = health(&config, &[]);
    expect(
        &out,
        0,
        &format!("GET /health on 127.0.0.1:{port}: healthy"),
    );
    assert!(took < BOUND, "took {took:?}");
    // The token guards batches only: the probe needs it not, and never prints it.
    assert!(!stderr(&out).contains("s3cret"));
    let (out, _) = health(&config, &["--ready"]);
    expect(&out, 0, "GET /ready on");

    relay.kill9();
    let (out, took) = health(&config, &["--timeout", "1"]);
    expect(&out, 1, "unhealthy");
    assert!(stderr(&out).contains(&format!("127.0.0.1:{port}")));
    assert!(took < Duration::from_secs(1) + SLACK, "took {took:?}");
    let (out, _) = health(&config, &["--ready"]);
    expect(&out, 1, "unhealthy");
}

#[test]
fn a_hung_relay_is_unhealthy_within_the_timeout() {
    let (_d, dir) = tmp();
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", STDOUT));
    let config = dir.join("relay.toml");
    // SIGSTOP: the kernel still completes connections into the listen backlog, but nothing
    // answers. The probe must give up on its own deadline, not hang the health check.
    relay.proc.signal(libc::SIGSTOP);
    let (out, took) = health(&config, &["--timeout", "0.5"]);
    relay.proc.signal(libc::SIGCONT);
    expect(&out, 1, "no answer within");
    assert!(took >= Duration::from_millis(500), "took {took:?}");
    assert!(took < Duration::from_millis(500) + SLACK, "took {took:?}");
    let (out, _) = health(&config, &[]);
    expect(&out, 0, "healthy");
}

#[test]
fn port_0_is_probed_through_the_address_file() {
    let (_d, dir) = tmp();
    let relay = start(&dir, &spool_config(&dir.join("spool"), "", STDOUT));
    let config = dir.join("relay.toml");
    let (out, _) = health(&config, &[]);
    expect(
        &out,
        0,
        &format!("GET /health on {}: healthy", relay.address),
    );
    relay.kill9();
    // The address file outlives a SIGKILL; the port it names no longer answers.
    let (out, _) = health(&config, &[]);
    expect(&out, 1, "unhealthy");
}

#[test]
fn a_unix_socket_listener_is_probed() {
    let (_d, dir) = tmp();
    let socket = dir.join("relay.sock");
    let config = format!(
        "[listen]\naddress = \"unix:{}\"\naddress_file = \"ADDRESS_FILE\"\n\n\
         [spool]\ndir = \"{}\"\n\n{STDOUT}",
        socket.display(),
        dir.join("spool").display()
    );
    let relay = start(&dir, &config);
    let config = dir.join("relay.toml");
    let (out, _) = health(&config, &["--ready"]);
    expect(
        &out,
        0,
        &format!("GET /ready on unix:{}: healthy", socket.display()),
    );
    relay.kill9();
    let (out, _) = health(&config, &[]);
    expect(&out, 1, "unhealthy");
}

#[test]
fn unusable_configurations_exit_2() {
    let (_d, dir) = tmp();
    let missing = dir.join("missing.toml");
    let (out, _) = health(&missing, &[]);
    expect(&out, 2, "cannot probe: configuration");

    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[listen]\naddress = \"nowhere\"\n").unwrap();
    let (out, _) = health(&broken, &[]);
    expect(&out, 2, "listen.address");

    // Port 0 without an address file: the chosen port is nowhere to be read.
    let zero = dir.join("zero.toml");
    std::fs::write(
        &zero,
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n\n[spool]\ndir = \"{}\"\n\n{STDOUT}",
            dir.join("spool").display()
        ),
    )
    .unwrap();
    let (out, _) = health(&zero, &[]);
    expect(&out, 2, "address_file");
}

#[test]
fn running_still_takes_config_alone_and_health_has_help() {
    // `--config` without a subcommand is the relay itself (every other test starts it so);
    // here only the help texts and the refusals are checked.
    let help = Command::new(env!("CARGO_BIN_EXE_sluice-relay"))
        .args(["health", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for needle in ["--ready", "--timeout", "--config", "exit"] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let none = Command::new(env!("CARGO_BIN_EXE_sluice-relay"))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "no --config is a usage error");
}
