//! moto, the S3 + SQS (and SNS, EventBridge) emulator, as a child process on a loopback port;
//! SDK clients pointed at it; buckets whose `s3:ObjectCreated:*` events go to a queue; uploads,
//! queue depth; SNS and EventBridge calls through moto's wire protocols (the workspace has no
//! SNS or EventBridge SDK client); moto's request recorder.
//!
//! moto comes from `MOTO_SERVER` or the workspace's `.venv` (scripts/ensure-moto.sh installs
//! it). Each caller starts its own server, so tests running side by side share nothing.
//! Functions named `try_*` (and [`Moto::launch`]) return errors for the benchmark; the others
//! panic with a message, for tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::{free_port, Error};

/// A running moto server, killed on drop.
pub struct Moto {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// moto from `MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`.
pub fn moto_program(repo: &Path) -> PathBuf {
    std::env::var("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join(".venv/bin/moto_server"))
}

impl Moto {
    /// Starts the workspace's moto (see [`moto_program`]) and waits until it answers; panics
    /// when it cannot.
    pub fn start() -> Moto {
        let program = moto_program(&crate::workspace_root());
        assert!(
            program.exists(),
            "{} is missing: run scripts/ensure-moto.sh (it installs moto into .venv) or set \
             MOTO_SERVER",
            program.display()
        );
        Moto::launch(&program, None).unwrap_or_else(|e| panic!("moto: {e}"))
    }

    /// Starts `program` (moto_server) with its stderr in `log` (discarded when None) and
    /// waits until it answers.
    pub fn launch(program: &Path, log: Option<&Path>) -> Result<Moto, Error> {
        let port = free_port();
        // moto's request recorder writes a file into its working directory: keep that out
        // of the repo, one file per server.
        let scratch = std::env::temp_dir().join(format!("sluice-moto-{port}"));
        std::fs::create_dir_all(&scratch)?;
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&scratch)
            .env("MOTO_RECORDER_FILEPATH", scratch.join("recording"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::Harness(format!("starting {}: {e}", program.display())))?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err(Error::Harness("moto did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forgets every bucket, queue and message (moto's reset API), so one server can serve
    /// several scenarios in turn.
    pub fn reset(&self) {
        moto_post(self, "POST", "/moto-api/reset", &[], "");
    }

    /// SDK configuration pointed at this server.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// S3 (path style) and SQS clients for this server.
    pub async fn clients(&self) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
        clients(&self.endpoint).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SDK configuration for `endpoint`, with moto's dummy keys.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// S3 (path style) and SQS clients for an endpoint, with moto's dummy keys.
pub async fn clients(endpoint: &str) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let shared = sdk_config(endpoint).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    );
    (s3, aws_sdk_sqs::Client::new(&shared))
}

/// A bucket and a queue (wired or not).
#[derive(Clone)]
pub struct Wired {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    pub queue_url: String,
}

/// Creates a queue; returns its (URL, ARN).
pub async fn try_create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<(String, String), Error> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| Error::aws("create queue", e))?
        .queue_url
        .ok_or_else(|| Error::Harness("no queue url".into()))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| Error::aws("queue attributes", e))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| Error::Harness("no queue arn".into()))?;
    Ok((url, arn))
}

/// As [`try_create_queue`], panicking.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    try_create_queue(sqs, name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Creates bucket `name` and queue `name`, and the notification between them.
pub async fn try_wire(endpoint: &str, name: &str) -> Result<Wired, Error> {
    let (s3, sqs) = clients(endpoint).await;
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .map_err(|e| Error::aws("create bucket", e))?;
    let (queue_url, arn) = try_create_queue(&sqs, name).await?;
    let queue = QueueConfiguration::builder()
        .queue_arn(arn)
        .events(Event::S3ObjectCreated)
        .build()
        .map_err(|e| Error::aws("queue configuration", e))?;
    s3.put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(queue)
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::aws("put notification", e))?;
    Ok(Wired {
        s3,
        sqs,
        bucket: name.to_string(),
        queue_url,
    })
}

/// As [`try_wire`] on `moto`, panicking.
pub async fn wire(moto: &Moto, name: &str) -> Wired {
    try_wire(&moto.endpoint, name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
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

    /// Uploads a file under `key`: one PutObject up to 1 GiB (moto announces a multipart
    /// upload twice, which would double the expected events), multipart above.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), Error> {
        let len = std::fs::metadata(path)?.len();
        const PART: u64 = 64 << 20;
        let body = |offset: u64, n: u64| {
            ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(n))
                .build()
        };
        if len <= 1 << 30 {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| Error::aws("read file", e))?;
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| Error::aws("put object", e))?;
            return Ok(());
        }
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::aws("create multipart upload", e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1;
        while offset < len {
            let n = PART.min(len - offset);
            let part = body(offset, n)
                .await
                .map_err(|e| Error::aws("read file", e))?;
            let out = self
                .s3
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(part)
                .send()
                .await
                .map_err(|e| Error::aws("upload part", e))?;
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset += n;
            number += 1;
        }
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Error::aws("complete multipart upload", e))?;
        Ok(())
    }

    /// (visible, in flight) message counts; a count moto leaves out reads as `u64::MAX`
    /// (never mistaken for an empty queue).
    pub async fn try_depth(&self) -> Result<(u64, u64), Error> {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| Error::aws("queue attributes", e))?
            .attributes
            .unwrap_or_default();
        let get = |k: &QueueAttributeName| {
            attrs
                .get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        Ok((
            get(&QueueAttributeName::ApproximateNumberOfMessages),
            get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// As [`Wired::try_depth`], panicking.
    pub async fn depth(&self) -> (u64, u64) {
        self.try_depth().await.unwrap_or_else(|e| panic!("{e}"))
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

/// One request to moto, the way an SDK would send it for `service` (moto picks the service
/// from the credential scope of the Authorization header and checks no signature). Returns the
/// response body; panics naming the call on a status other than 2xx.
fn moto_post(
    moto: &Moto,
    method: &str,
    path: &str,
    service_and_headers: &[(&str, &str)],
    body: &str,
) -> String {
    let authority = moto.endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to moto");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: \
         close\r\n",
        body.len()
    );
    for (name, value) in service_and_headers {
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
        "{method} {path} {body:?} answered {head:?}"
    );
    body.to_string()
}

/// A POST for AWS `service` with `headers` (SNS, EventBridge).
fn service_post(moto: &Moto, service: &str, headers: &[(&str, &str)], body: &str) -> String {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let mut all = vec![("Authorization", authorization.as_str())];
    all.extend_from_slice(headers);
    moto_post(moto, "POST", "/", &all, body)
}

/// An SNS (query protocol) action with its parameters; returns the XML answer.
pub fn sns_call(moto: &Moto, action: &str, params: &[(&str, &str)]) -> String {
    let mut body = format!("Action={action}&Version=2010-03-31");
    for (name, value) in params {
        body.push_str(&format!("&{}={}", form_encode(name), form_encode(value)));
    }
    service_post(
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
    service_post(
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
    crate::metrics::http(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_form_encoding() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(form_encode("a b+c/~"), "a%20b%2Bc%2F~");
        assert_eq!(xml_text("<a><b>x</b></a>", "b").as_deref(), Some("x"));
    }

    /// The kit's own moto round: wire, upload, see the notification, reset, wire again.
    #[tokio::test]
    async fn wire_put_reset() {
        let moto = Moto::start();
        let wired = wire(&moto, "kit-round").await;
        wired.put("a.log", b"one\n".to_vec()).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Peeking hides nothing; moto's s3:TestEvent may come first.
            let bodies = wired.peek().await;
            if bodies.iter().any(|m| m.contains("a.log")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no ObjectCreated for a.log: {bodies:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto.reset();
        assert!(
            wired.try_depth().await.is_err(),
            "the queue outlived the reset"
        );
        let again = wire(&moto, "kit-round").await;
        let (visible, in_flight) = again.depth().await;
        assert!(visible <= 1 && in_flight == 0, "{visible} {in_flight}");
    }
}
