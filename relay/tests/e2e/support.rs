//! What the relay's process-level tests share beyond the kit: start the real `sluice-relay`
//! binary on 127.0.0.1:0 with a config written into the test's own directory, read the
//! address it bound, talk to it with the channel client, build batches with the channel
//! encoder (these two come from `sluice-channel`; the kit stays free of sluice crates).

pub use sluice_testkit::devo::{assert_devo_line, ids};
pub use sluice_testkit::metrics::{http_get, metric_value, wait_metric};
pub use sluice_testkit::pki::Pki;
pub use sluice_testkit::process::Proc;
pub use sluice_testkit::receiver::{Fault, Options, Receiver, Seen, ServerTls};
pub use sluice_testkit::{free_port, path_str, tmp};

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use sluice_channel::client::ChannelClient;
use sluice_channel::encode::{BatchEncoder, EncodedBatch};

/// A running relay process and the address it bound.
pub struct Relay {
    pub proc: Proc,
    pub address: String,
}

/// Writes `config` (which must hold `ADDRESS_FILE` where the address file goes) and starts the
/// relay; waits until it listens.
pub fn start(dir: &Path, config: &str) -> Relay {
    start_env(dir, config, &[])
}

/// As [`start`], with extra environment variables for the relay (its own, not the test's).
pub fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Relay {
    let address_file = dir.join("address");
    let _ = std::fs::remove_file(&address_file);
    let config = config.replace("ADDRESS_FILE", &path_str(&address_file));
    let config_path = dir.join("relay.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Proc::command(Path::new(env!("CARGO_BIN_EXE_sluice-relay")), &config_path);
    cmd.envs(env.iter().copied());
    let mut proc = Proc::capture(cmd, "relay");
    let address = proc
        .wait_address_file(&address_file, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("relay: {e}"));
    Relay { proc, address }
}

impl Relay {
    pub fn url(&self) -> String {
        if self.address.starts_with("unix:") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }

    pub fn client(&self, token: Option<&str>) -> ChannelClient {
        ChannelClient::new(
            &self.url(),
            token.map(str::to_string),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until stdout holds at least `n` lines; returns them.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        self.proc.stdout.wait_lines(n, timeout)
    }

    pub fn stderr_text(&self) -> String {
        self.proc.stderr.text()
    }

    /// SIGTERM, then the exit status (waits up to 30 s).
    pub fn terminate(mut self) -> ExitStatus {
        self.proc.terminate()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.proc.kill9();
    }
}

/// A batch of `(tag, message)` events.
pub fn batch(events: &[(&str, &str)]) -> EncodedBatch {
    let mut e = BatchEncoder::new(6);
    for (t, m) in events {
        e.push(t, m.as_bytes());
    }
    e.finish()
}

/// A relay configuration on 127.0.0.1:0 with its address file, a spool in `spool`, extra
/// `[listen]` keys and the outputs given.
pub fn spool_config(spool: &Path, extra_listen: &str, outputs: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\naddress_file = \"ADDRESS_FILE\"\n{extra_listen}\n\
         [spool]\ndir = \"{}\"\n\n{outputs}\n",
        spool.display()
    )
}
