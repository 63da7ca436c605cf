//! One test's containers, wired as the compose file and the pod design wire them: moto on the
//! `aws` network (its port published on 127.0.0.1 only, so the test drives S3 and SQS with the
//! testkit's SDK clients), the mutual-TLS receiver standing in for Devo on the `devo` network,
//! relays on `devo`, collectors on `aws`, each collector sharing only a channel volume (the
//! relay's unix socket) with its relay. Configurations and certificates (testkit::pki) live in
//! the test's temporary directory, bind-mounted read-only; the receiver's line file is
//! bind-mounted too, so the test counts lines while they arrive.
//!
//! It does not start anything on the host besides the docker CLI, and it never publishes a port
//! on anything but 127.0.0.1.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_testkit::devo::parse_devo_line;
use sluice_testkit::moto::{try_wire, Wired};
use sluice_testkit::pki::Pki;

use crate::docker::{self, logs, peak_memory, Run, Spec};

pub const TAG: &str = "my.app.sluice.ct";
/// Where the receiver listens inside the `devo` network.
const RECEIVER: &str = "receiver:6514";

/// The images, from the environment (scripts/container-test.sh builds them).
pub struct Images {
    pub sluice: String,
    pub moto: String,
    pub receiver: String,
}

impl Images {
    pub fn from_env() -> Images {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let images = Images {
            sluice: var("SLUICE_IMAGE", "sluice:local"),
            moto: var("SLUICE_MOTO_IMAGE", "sluice-moto:local"),
            receiver: var("SLUICE_RECEIVER_IMAGE", "sluice-test-receiver:local"),
        };
        for i in [&images.sluice, &images.moto, &images.receiver] {
            assert!(
                docker::image_exists(i),
                "image {i} is missing: scripts/container-test.sh builds it"
            );
        }
        images
    }
}

/// Waits until a container's stderr holds `needle`; panics with its logs after `timeout`.
pub fn wait_log(container: &str, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (out, err) = logs(container);
        if err.contains(needle) || out.contains(needle) {
            return;
        }
        assert!(
            docker::running(container) && Instant::now() < deadline,
            "{container} did not log {needle:?} (running: {}); its log:\n{err}",
            docker::running(container)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts moto on `network` (alias `moto`), published on 127.0.0.1; (container, endpoint).
pub async fn start_moto(run: &Run, images: &Images, network: &str) -> (String, String) {
    let moto = run.run(&Spec {
        name: run.name("moto"),
        image: images.moto.clone(),
        network: network.to_string(),
        aliases: vec!["moto".into()],
        publish: vec![5000],
        ..Spec::default()
    });
    let endpoint = format!("http://{}", docker::published(&moto, 5000));
    (moto, endpoint)
}

/// Creates a bucket and a queue named `name` wired together, retrying while moto starts
/// (the published port accepts before moto does).
pub async fn wire_when_up(endpoint: &str, name: &str) -> Wired {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_wire(endpoint, name).await {
            Ok(w) => return w,
            Err(e) => {
                assert!(Instant::now() < deadline, "moto at {endpoint}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The queue's URL as the containers see it (`http://moto:5000/...`).
pub fn inner_queue_url(wired: &Wired) -> String {
    let path = wired
        .queue_url
        .splitn(4, '/')
        .nth(3)
        .expect("a queue URL with a path");
    format!("http://moto:5000/{path}")
}

/// A test's whole set: networks, moto, the receiver, and the relays and collectors it adds.
pub struct Lab {
    pub run: Run,
    pub images: Images,
    pub aws: String,
    pub devo: String,
    _dir: tempfile::TempDir,
    /// Mounted at /etc/sluice in relays and collectors (configs, `certs/`).
    etc: PathBuf,
    /// The receiver's line file on the host.
    pub lines: PathBuf,
    pub moto: String,
    pub wired: Wired,
    pub receiver: String,
    /// Peak memory seen per container (bytes), kept across restarts.
    pub peaks: BTreeMap<String, u64>,
}

impl Lab {
    /// Networks, moto with a wired bucket and queue, certificates and the receiver.
    pub async fn start(case: &str) -> Lab {
        let images = Images::from_env();
        let run = Run::new(case);
        let aws = run.network("aws");
        let devo = run.network("devo");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let etc = dir.path().join("etc");
        let out = dir.path().join("out");
        for d in [dir.path(), &etc, &out] {
            std::fs::create_dir_all(d).unwrap();
            // uid 10001 in the sluice image reads the configs and certificates.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Pki::generate(&etc.join("certs"), "", "sluice-ct CA", &["receiver"]).expect("pki");
        std::fs::set_permissions(etc.join("certs"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        for f in std::fs::read_dir(etc.join("certs")).unwrap() {
            let f = f.unwrap().path();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (moto, endpoint) = start_moto(&run, &images, &aws).await;
        let receiver = run.run(&Spec {
            name: run.name("receiver"),
            image: images.receiver.clone(),
            network: devo.clone(),
            aliases: vec!["receiver".into()],
            volumes: vec![
                format!("{}:/certs:ro", etc.join("certs").display()),
                format!("{}:/out", out.display()),
            ],
            args: [
                "--listen",
                "0.0.0.0:6514",
                "--cert",
                "/certs/server.crt",
                "--key",
                "/certs/server.key",
                "--client-ca",
                "/certs/chain.crt",
                "--out",
                "/out/lines.log",
            ]
            .map(String::from)
            .to_vec(),
            ..Spec::default()
        });
        let wired = wire_when_up(&endpoint, &format!("ct-{case}")).await;
        wait_log(&receiver, "listening on", Duration::from_secs(30));
        std::fs::write(etc.join("relay.toml"), relay_toml()).unwrap();
        Lab {
            run,
            images,
            aws,
            devo,
            _dir: dir,
            etc,
            lines: out.join("lines.log"),
            moto,
            wired,
            receiver,
            peaks: BTreeMap::new(),
        }
    }

    /// Starts relay `n` on `devo` with its own channel and spool volumes; waits until it listens.
    pub fn relay(&self, n: usize) -> String {
        let channel = self.run.volume(&format!("channel{n}"));
        let spool = self.run.volume(&format!("spool{n}"));
        let relay = self.run.run(&Spec {
            name: self.run.name(&format!("relay{n}")),
            image: self.images.sluice.clone(),
            network: self.devo.clone(),
            volumes: vec![
                format!("{}:/etc/sluice:ro", self.etc.display()),
                format!("{channel}:/run/sluice"),
                format!("{spool}:/var/lib/sluice-relay"),
            ],
            entrypoint: Some("/usr/local/bin/sluice-relay".into()),
            args: ["--config", "/etc/sluice/relay.toml"]
                .map(String::from)
                .to_vec(),
            ..Spec::default()
        });
        wait_log(&relay, "relay listening", Duration::from_secs(30));
        relay
    }

    /// Starts collector `n` on `aws`, sharing relay `n`'s channel volume, with the given
    /// visibility timeout (seconds).
    pub fn collector(&self, n: usize, visibility: u32) -> String {
        let config = format!("collector{n}.toml");
        std::fs::write(
            self.etc.join(&config),
            collector_toml(n, &inner_queue_url(&self.wired), visibility),
        )
        .unwrap();
        self.run.run(&Spec {
            name: self.run.name(&format!("collector{n}")),
            image: self.images.sluice.clone(),
            network: self.aws.clone(),
            volumes: vec![
                format!("{}:/etc/sluice:ro", self.etc.display()),
                format!("{}:/run/sluice", self.run.name(&format!("channel{n}"))),
            ],
            args: vec!["--config".into(), format!("/etc/sluice/{config}")],
            ..Spec::default()
        })
    }

    /// Uploads objects `range`, each of `per_object` lines `ID PADDING` with unique ids;
    /// the ids.
    pub async fn put_objects(
        &self,
        case: &str,
        range: std::ops::Range<usize>,
        per_object: usize,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for o in range {
            let mut body = String::new();
            for l in 0..per_object {
                let id = format!("{case}-{o:04}-{l:05}");
                body.push_str(&id);
                body.push_str(" the quick brown fox jumps over the lazy dog, again and again\n");
                ids.push(id);
            }
            self.wired
                .put(&format!("logs/{case}/{o:04}.log"), body.into_bytes())
                .await;
        }
        ids
    }

    /// The receiver's lines, counted per id (every line must be a Devo line with our tag).
    pub fn received(&self) -> BTreeMap<String, usize> {
        count_ids(&std::fs::read_to_string(&self.lines).unwrap_or_default())
    }

    /// Waits until every id in `expected` arrived and the queue holds no message; panics with
    /// the counts after `timeout`.
    pub async fn wait_all(
        &self,
        expected: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if expected.iter().all(|id| got.contains_key(id)) && self.wired.depth().await == (0, 0)
            {
                return got;
            }
            if Instant::now() >= deadline {
                let missing = expected.iter().filter(|id| !got.contains_key(*id)).count();
                panic!(
                    "{missing} of {} ids missing, queue {:?}; receiver log:\n{}",
                    expected.len(),
                    self.wired.depth().await,
                    logs(&self.receiver).1
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records the current peak memory of `containers` (max with what was seen before).
    pub fn sample_peaks(&mut self, containers: &[&str]) {
        for c in containers {
            if let Some(p) = peak_memory(c) {
                let short = c
                    .strip_prefix(&format!("{}-", self.run.prefix))
                    .unwrap_or(c);
                let e = self.peaks.entry(short.to_string()).or_insert(0);
                *e = (*e).max(p);
            }
        }
    }
}

/// Counts the ids (first word of the message) of Devo lines in `text`.
pub fn count_ids(text: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (_, tag, message) =
            parse_devo_line(line).unwrap_or_else(|| panic!("not a Devo line: {line:.200}"));
        assert_eq!(tag, TAG, "{line:.200}");
        let id = message.split(' ').next().unwrap_or_default();
        *seen.entry(id.to_string()).or_insert(0) += 1;
    }
    seen
}

/// (lines received, distinct ids, duplicates) of `got`, checking every expected id is there.
pub fn tally(expected: &[String], got: &BTreeMap<String, usize>) -> (usize, usize, usize) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !got.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "lost: {} ids, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let lines: usize = got.values().sum();
    (lines, got.len(), lines - got.len())
}

/// One row of the figures table, printed (the test's output is the record).
pub fn figures(
    case: &str,
    expected: usize,
    got: &BTreeMap<String, usize>,
    secs: f64,
    peaks: &BTreeMap<String, u64>,
) {
    let lines: usize = got.values().sum();
    let dups = lines - got.len();
    let peaks: Vec<String> = peaks
        .iter()
        .map(|(c, b)| format!("{c} {:.1}", *b as f64 / (1 << 20) as f64))
        .collect();
    println!(
        "FIGURES | {case} | expected {expected} | received {lines} | duplicates {dups} | ratio {:.4} | {secs:.1} s | peak MiB: {} |",
        dups as f64 / expected as f64,
        peaks.join(", ")
    );
}

fn relay_toml() -> String {
    format!(
        r#"[listen]
address = "unix:/run/sluice/relay.sock"
shutdown_timeout_secs = 5

[spool]
dir = "/var/lib/sluice-relay"

[[outputs]]
type = "devo"
devo_address = "{RECEIVER}"
chain_filename = "/etc/sluice/certs/chain.crt"
cert_filename = "/etc/sluice/certs/client.crt"
key_filename = "/etc/sluice/certs/client.key"
connect_timeout_ms = 3000
backoff_max_ms = 2000
confirm_interval_ms = 500
"#
    )
}

fn collector_toml(n: usize, queue: &str, visibility: u32) -> String {
    format!(
        r#"[relay]
url = "unix:/run/sluice/relay.sock"

[batch]
max_age_ms = 200

[collector]
id = "ct{n}"
metrics_address = "127.0.0.1:9701"
shutdown_timeout_secs = 5

[[inputs]]
name = "ct"
base_url = "{queue}"
region = "us-east-1"
endpoint_url = "http://moto:5000"
aws_access_key_id = "testing"
aws_secret_access_key = "testing"
tag = "{TAG}"
sqs_wait_timeout = 1
sqs_visibility_timeout = {visibility}
"#
    )
}
