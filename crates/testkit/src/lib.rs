//! sluice-testkit: the harness of sluice's process-level tests and of `tools/bench`, written
//! once. Real parts only: a real moto server, real certificates, real sockets, the real
//! binaries as child processes. It does not depend on `sluice` or `sluice-relay` (binaries are
//! found by path), and it holds no test of its own beyond the unit tests of its helpers.
//!
//! Map:
//! - [`moto`]: the S3 + SQS emulator on a loopback port, buckets wired to queues, SNS and
//!   EventBridge calls through moto's wire protocols, moto's request recorder;
//! - [`pki`] and [`tls`]: certificates made with rcgen, rustls configurations (ring provider);
//! - [`receiver`]: a TCP or mutual-TLS receiver that keeps every byte, with fault modes;
//! - [`sink`]: the benchmark's counting mutual-TLS receiver (keeps nothing, costs little);
//! - [`stand_in`]: a plain-HTTP stand-in relay that answers after a delay;
//! - [`process`]: child processes with captured output, signals, binary lookup;
//! - [`metrics`]: Prometheus text parsing, HTTP requests, waiting for a metric;
//! - [`devo`]: Devo line parsing and checks, event ids, counting;
//! - [`wait`]: polling with a deadline (`wait_for`, `settled`);
//! - [`procstat`]: CPU seconds and memory of processes from /proc.

pub mod devo;
pub mod error;
pub mod health;
pub mod metrics;
pub mod moto;
pub mod pki;
pub mod process;
pub mod procstat;
pub mod receiver;
pub mod sink;
pub mod stand_in;
pub mod tls;
pub mod wait;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use error::Error;

/// A free port on 127.0.0.1 (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh temporary directory (removed when the guard drops) and its path.
pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("a temporary directory");
    let p = d.path().to_path_buf();
    (d, p)
}

/// A path as text, for configuration files.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// gzip of `data` as one member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// The workspace's root directory (where `.venv` lives).
pub fn workspace_root() -> PathBuf {
    // This crate sits at `<root>/crates/testkit`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}
