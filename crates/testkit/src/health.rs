//! Runs a binary's `health` subcommand (`sluice health`, `sluice-relay health`) the way a
//! container's health check does, and checks what it answered: the exit code, exactly one
//! line on stderr, nothing on stdout. It starts no server; the tests start what is probed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What starting a debug binary may add to the probe's own timeout on a busy machine.
pub const SLACK: Duration = Duration::from_millis(1500);
/// The probe's default timeout (2 s) plus [`SLACK`].
pub const BOUND: Duration = Duration::from_millis(3500);

/// `binary health --config config [extra…]` with `RUST_LOG` unset, and its wall time.
pub fn run(binary: &Path, config: &Path, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(binary)
        .arg("health")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run {} health: {e}", binary.display()));
    (out, started.elapsed())
}

/// The exit code; panics when the probe was ended by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().expect("health exited by a signal")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, one line on stderr containing `needle`, nothing on stdout.
pub fn expect(out: &Output, want: i32, needle: &str) {
    let text = stderr(out);
    assert_eq!(code(out), want, "stderr: {text}");
    assert_eq!(text.lines().count(), 1, "one line expected: {text}");
    assert!(text.contains(needle), "{needle:?} not in {text:?}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
}
