//! Test harness for process-level tests: a real moto server (S3 + SQS emulator) on a free
//! loopback port, AWS SDK clients pointed at it, and the two real binaries run as child
//! processes with their output captured.
//!
//! moto comes from the repo's `.venv` (scripts/test.sh installs it) or `MOTO_SERVER`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits until it answers.
    pub fn start() -> Moto {
        let program = std::env::var("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join(".venv/bin/moto_server"));
        assert!(
            program.exists(),
            "{} is missing: run scripts/test.sh (it installs moto into .venv)",
            program.display()
        );
        let port = free_port();
        // moto's request recorder writes a file into its working directory: keep that out
        // of the repo, one file per server.
        let scratch = std::env::temp_dir().join(format!("sluice-moto-{port}"));
        let _ = std::fs::create_dir_all(&scratch);
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&scratch)
            .env("MOTO_RECORDER_FILEPATH", scratch.join("recording"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// SDK configuration pointed at this server.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    /// S3 and SQS clients for this server.
    pub async fn clients(&self) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
        let shared = self.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        (s3, aws_sdk_sqs::Client::new(&shared))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bucket whose `s3:ObjectCreated:*` events go to a queue.
pub struct Wired {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    pub queue_url: String,
}

/// Creates bucket and queue and the notification between them.
pub async fn wire(moto: &Moto, name: &str) -> Wired {
    let (s3, sqs) = moto.clients().await;
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("create bucket");
    let (queue_url, arn) = create_queue(&sqs, name).await;
    s3.put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .build()
                        .expect("queue configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("put notification");
    Wired {
        s3,
        sqs,
        bucket: name.to_string(),
        queue_url,
    }
}

impl Wired {
    /// Uploads `body` under `key`.
    pub async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("put object");
    }

    /// Waits until the queue has no visible and no in-flight message.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.depth().await == (0, 0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (visible, in flight) message counts.
    pub async fn depth(&self) -> (u64, u64) {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        let get = |k: &QueueAttributeName| {
            attrs
                .get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        (
            get(&QueueAttributeName::ApproximateNumberOfMessages),
            get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }
}

/// gzip of `data` as one member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Lines a child printed, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Messages recorded by a stand-in relay (lines are `TAG MESSAGE`), counted.
    pub fn counted(&self) -> std::collections::BTreeMap<String, usize> {
        let mut seen = std::collections::BTreeMap::new();
        for line in self.snapshot() {
            let message = line
                .split_once(' ')
                .map(|(_, m)| m.to_string())
                .unwrap_or(line);
            *seen.entry(message).or_insert(0) += 1;
        }
        seen
    }

    /// Adds a line (for receivers written in the tests).
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn collect(
        self,
        stream: impl std::io::Read + Send + 'static,
        echo: Option<&'static str>,
    ) -> Self {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(prefix) = echo {
                    eprintln!("[{prefix}] {line}");
                }
                lines.0.lock().unwrap().push(line);
            }
        });
        self
    }

    /// A copy of every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Lines containing every one of `needles`.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }
}

/// A child process killed on drop, with its captured output.
pub struct Proc {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    /// `http://127.0.0.1:PORT` serving its `GET /metrics`, when it has one.
    pub metrics: Option<String>,
}

impl Proc {
    pub fn spawn(program: &Path, config: &Path, name: &'static str) -> Proc {
        let mut child = Command::new(program)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stdout = Lines::default().collect(child.stdout.take().expect("stdout"), None);
        let stderr = Lines::default().collect(child.stderr.take().expect("stderr"), Some(name));
        Proc {
            child,
            stdout,
            stderr,
            metrics: None,
        }
    }

    /// Its metrics, in the Prometheus text format (empty when it serves none).
    pub fn metrics_text(&self) -> String {
        self.metrics
            .as_deref()
            .map(|m| http(m, "GET", "/metrics"))
            .unwrap_or_default()
    }

    /// The sum of every series of the counter `name` (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        metric_sum(&self.metrics_text(), name, &[])
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay binary, built next to the collector by `cargo test --workspace`.
pub fn relay_binary() -> PathBuf {
    let collector = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let relay = collector.with_file_name("sluice-relay");
    assert!(
        relay.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        relay.display()
    );
    relay
}

/// Starts the relay with stdout output on `port`, extra TOML appended to its config.
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
    let mut relay = Proc::spawn(&relay_binary(), &config, "relay");
    relay.metrics = Some(format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "relay did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    start_collector_with(
        dir,
        moto,
        wired,
        relay_port,
        "max_age_ms = 200",
        input_extra,
    )
}

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
    let mut collector = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        &config,
        "collector",
    );
    collector.metrics = Some(format!("http://127.0.0.1:{metrics_port}"));
    collector
}

/// The sum of the series of the counter `name` in a Prometheus text exposition whose labels
/// hold every one of `labels` (`("input", "test")`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            if !(series.is_empty() || series.starts_with('{')) {
                return None; // another metric whose name starts with `name`
            }
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

/// (messages received, messages handled to their end) by a collector, from its metrics (the
/// harness's collectors serve them); None when it serves none.
pub fn collector_messages(collector: &Proc) -> Option<(u64, u64)> {
    let text = collector.metrics_text();
    (!text.is_empty()).then(|| {
        (
            metric_sum(&text, "sluice_messages_received_total", &[]),
            metric_sum(&text, "sluice_messages_total", &[]),
        )
    })
}

/// True when the relay delivered every event it accepted and the test read every line it
/// printed. After a restart the spool's replay can make deliveries outnumber acceptances.
pub fn relay_idle(relay: &Proc) -> bool {
    let text = relay.metrics_text();
    let delivered = metric_sum(&text, "sluice_relay_events_delivered_total", &[]);
    !text.is_empty()
        && metric_sum(&text, "sluice_relay_events_accepted_total", &[]) <= delivered
        && relay.stdout.snapshot().len() as u64 == delivered
}

/// Waits until nothing more can arrive: the queue holds no message, visible or in flight; the
/// collector handled every message it received (so no task still sends, not even for a
/// redelivered copy); and the relay, when given, printed everything it accepted. Checked
/// twice around the queue's depth, so the three hold at one moment.
pub async fn settled(
    wired: &Wired,
    collector: &Proc,
    relay: Option<&Proc>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let before = collector_messages(collector);
        if before.is_some_and(|(received, handled)| received == handled)
            && wired.depth().await == (0, 0)
            && relay.map_or(true, relay_idle)
            && collector_messages(collector) == before
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub async fn wait_for<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// Splits a Devo line `<14>Mmm dd HH:MM:SS HOST TAG: MESSAGE` into (host, tag, message),
/// checking the fixed parts.
pub fn parse_devo_line(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("<14>")?;
    let (date, rest) = rest.split_at_checked(15)?;
    let b = date.as_bytes();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !months.contains(&&date[..3])
        || b[3] != b' '
        || !(b[4] == b' ' || b[4].is_ascii_digit())
        || !b[5].is_ascii_digit()
        || b[6] != b' '
        || b[9] != b':'
        || b[12] != b':'
    {
        return None;
    }
    let rest = rest.strip_prefix(' ')?;
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    Some((host, tag, message))
}

/// A stand-in relay that answers every batch after `delay`, for tests of the collector's
/// behaviour against a slow peer. It speaks just enough of docs/channel.md: reads a POST,
/// gunzips the body, records its lines (`TAG MESSAGE`), answers 200.
pub struct SlowRelay {
    pub port: u16,
    pub lines: Lines,
}

impl SlowRelay {
    pub fn start(delay: Duration) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || serve_slow(stream, delay, sink));
            }
        });
        SlowRelay { port, lines }
    }
}

fn serve_slow(stream: std::net::TcpStream, delay: Duration, sink: Lines) {
    use std::io::Read;
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut text = String::new();
        let _ = flate2::read::MultiGzDecoder::new(&body[..]).read_to_string(&mut text);
        std::thread::sleep(delay);
        let events = text.lines().count();
        sink.0
            .lock()
            .unwrap()
            .extend(text.lines().map(str::to_string));
        let answer = format!("{{\"events\":{events},\"duplicate\":false}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A plain HTTP/1.1 request to `endpoint` (`http://host:port`), returning the body.
pub fn http(endpoint: &str, method: &str, path: &str) -> String {
    use std::io::Read;
    let authority = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    // One write: the collector's metrics listener reads the request in one read (`write!`
    // would send it piece by piece and meet a closed socket).
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Decodes standard base64 (moto's request recorder encodes bodies with it).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The request bodies moto recorded, decoded.
pub fn recorded_bodies(moto: &Moto) -> Vec<String> {
    http(
        &moto.endpoint,
        "GET",
        "/moto-api/recorder/download-recording",
    )
    .lines()
    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    .map(|record| {
        let body = record["body"].as_str().unwrap_or_default();
        if record["body_encoded"].as_bool() == Some(true) {
            String::from_utf8_lossy(&base64_decode(body)).into_owned()
        } else {
            body.to_string()
        }
    })
    .collect()
}

// ---- Helpers for tests/shapes.rs: queues without notifications, SNS and EventBridge through
// ---- moto's wire protocols (the repo has no SNS or EventBridge SDK client), and a collector
// ---- whose input has no preset tag.

/// Creates a queue; returns its (URL, ARN).
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    (url, arn)
}

/// A bucket and a queue with nothing between them: the test announces objects itself
/// (SendMessage) or wires SNS or EventBridge. Returns the pair and the queue's ARN.
pub async fn unwired(moto: &Moto, bucket: &str, queue: &str) -> (Wired, String) {
    let (s3, sqs) = moto.clients().await;
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
    let (queue_url, arn) = create_queue(&sqs, queue).await;
    let wired = Wired {
        s3,
        sqs,
        bucket: bucket.to_string(),
        queue_url,
    };
    (wired, arn)
}

impl Wired {
    /// Sends `body` to the queue as a message.
    pub async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send message");
    }

    /// Bodies of the messages now visible, read without hiding them (visibility timeout 0).
    pub async fn peek(&self) -> Vec<String> {
        self.sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive message")
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.body)
            .collect()
    }
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
    spawn_collector(
        dir,
        moto,
        wired,
        relay_port,
        "max_age_ms = 200",
        input_extra,
    )
}

/// Percent-encodes `text` for an `application/x-www-form-urlencoded` body.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One POST to moto for `service`, the way an SDK would send it (moto picks the service from
/// the credential scope of the Authorization header and checks no signature). Returns the
/// response body; panics naming the call on a status other than 2xx.
pub fn moto_post(moto: &Moto, service: &str, headers: &[(&str, &str)], body: &str) -> String {
    use std::io::Read;
    let authority = moto.endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to moto");
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {authority}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, \
         Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("write to moto");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read from moto");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    assert!(
        status.starts_with('2'),
        "{service} call {body:?} answered {head:?}"
    );
    body.to_string()
}

/// An SNS (query protocol) action with its parameters; returns the XML answer.
pub fn sns_call(moto: &Moto, action: &str, params: &[(&str, &str)]) -> String {
    let mut body = format!("Action={action}&Version=2010-03-31");
    for (name, value) in params {
        body.push_str(&format!("&{}={}", form_encode(name), form_encode(value)));
    }
    moto_post(
        moto,
        "sns",
        &[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        &body,
    )
}

/// An EventBridge (JSON 1.1 protocol) operation; returns the JSON answer.
pub fn events_call(moto: &Moto, operation: &str, input: &serde_json::Value) -> String {
    moto_post(
        moto,
        "events",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", &format!("AWSEvents.{operation}")),
        ],
        &input.to_string(),
    )
}

/// The text of the first `<name>` element of an XML answer.
pub fn xml_text(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_string())
}

/// Devo messages the relay printed on stdout, counted; every line must be a Devo line with
/// `tag` (and `host`, when given).
pub fn relay_messages(
    relay: &Proc,
    host: Option<&str>,
    tag: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for line in relay.stdout.snapshot() {
        let (h, t, message) =
            parse_devo_line(&line).unwrap_or_else(|| panic!("not a Devo line: {line:.200}"));
        if let Some(host) = host {
            assert_eq!(h, host);
        }
        assert_eq!(t, tag);
        *seen.entry(message.to_string()).or_insert(0) += 1;
    }
    seen
}
