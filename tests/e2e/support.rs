//! What the collector's end-to-end tests share beyond the kit: starting the relay with a
//! stdout output and the collector with one input on a moto queue, each with its
//! configuration written into the test's own directory and on its own ports.

pub use sluice_testkit::devo::*;
pub use sluice_testkit::metrics::*;
pub use sluice_testkit::moto::*;
pub use sluice_testkit::process::{binary, Proc};
pub use sluice_testkit::receiver::Receiver;
pub use sluice_testkit::stand_in::{SlowRelay, StandIn};
pub use sluice_testkit::wait::*;
pub use sluice_testkit::{free_port, gzip};

use std::path::Path;
use std::time::Duration;

/// The collector binary, built by cargo for this test.
pub fn collector_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Starts the relay (found next to the collector: `cargo test --workspace` builds it) with
/// stdout output on `port`, extra TOML appended to its config.
pub fn start_relay(dir: &Path, port: u16, extra: &str) -> Proc {
    let spool = dir.join("spool");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\n\n[spool]\ndir = \"{}\"\n\n{extra}\n[[outputs]]\ntype = \"stdout\"\nhostname = \"testhost\"\n",
            spool.display()
        ),
    )
    .expect("write relay config");
    let mut relay = Proc::spawn(&binary("sluice-relay"), &config, "relay");
    relay.metrics = Some(format!("http://127.0.0.1:{port}"));
    let up = poll(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "relay did not start");
    relay
}

/// Starts the collector for one input on `wired`'s queue, tagged `my.app.sluice.test`;
/// `input_extra` goes into the input.
pub fn start_collector(
    dir: &Path,
    moto: &Moto,
    wired: &Wired,
    relay_port: u16,
    input_extra: &str,
) -> Proc {
    start_collector_with(dir, moto, wired, relay_port, QUICK_BATCH, input_extra)
}

/// The `[batch]` table of the harness's collectors: batches leave after 200 ms, so tests
/// do not wait for the default age.
const QUICK_BATCH: &str = "max_age_ms = 200";

/// As [`start_collector`], with the body of the `[batch]` table given.
pub fn start_collector_with(
    dir: &Path,
    moto: &Moto,
    wired: &Wired,
    relay_port: u16,
    batch: &str,
    input_extra: &str,
) -> Proc {
    let input = format!("tag = \"my.app.sluice.test\"\n{input_extra}");
    spawn_collector(dir, moto, wired, relay_port, batch, &input)
}

/// As [`start_collector`], but the input has no `tag`: `input_extra` sets `tag`, `processor`
/// and the rest as the test needs (without a tag, the processor's default tag applies).
pub fn start_collector_untagged(
    dir: &Path,
    moto: &Moto,
    wired: &Wired,
    relay_port: u16,
    input_extra: &str,
) -> Proc {
    spawn_collector(dir, moto, wired, relay_port, QUICK_BATCH, input_extra)
}

/// Writes the collector's configuration (one input on `wired`'s queue, no tag unless `input`
/// sets one) and starts it.
fn spawn_collector(
    dir: &Path,
    moto: &Moto,
    wired: &Wired,
    relay_port: u16,
    batch: &str,
    input: &str,
) -> Proc {
    let config = dir.join("collector.toml");
    let metrics_port = free_port();
    std::fs::write(
        &config,
        format!(
            r#"[relay]
url = "http://127.0.0.1:{relay_port}"
timeout_secs = 5

[batch]
{batch}

[collector]
id = "test"
shutdown_timeout_secs = 3
metrics_address = "127.0.0.1:{metrics_port}"

[[inputs]]
name = "test"
base_url = "{queue}"
region = "us-east-1"
endpoint_url = "{endpoint}"
aws_access_key_id = "testing"
aws_secret_access_key = "testing"
sqs_wait_timeout = 1
{input}
"#,
            queue = wired.queue_url,
            endpoint = moto.endpoint,
        ),
    )
    .expect("write collector config");
    let mut collector = Proc::spawn(collector_binary(), &config, "collector");
    collector.metrics = Some(format!("http://127.0.0.1:{metrics_port}"));
    collector
}
