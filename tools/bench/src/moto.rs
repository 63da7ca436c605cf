//! The emulator side: moto (S3 + SQS) started from the repo's `.venv` on a loopback port,
//! buckets whose `s3:ObjectCreated:*` events go to a queue, uploads, queue depth.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

/// A free loopback port (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running moto server, killed on drop.
pub struct Moto {
    pub child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts `program` (moto_server) and waits until it answers.
    pub fn start(program: &Path, log: &Path) -> anyhow::Result<Moto> {
        let port = free_port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", program.display()))?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto from `MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`.
pub fn moto_program(repo: &Path) -> PathBuf {
    std::env::var("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join(".venv/bin/moto_server"))
}

/// S3 (path style) and SQS clients for an endpoint, with moto's dummy keys.
pub async fn clients(endpoint: &str) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    );
    (s3, aws_sdk_sqs::Client::new(&shared))
}

/// A bucket wired to a queue.
#[derive(Clone)]
pub struct Wired {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    pub queue_url: String,
}

/// Creates bucket `name` and queue `name`, and the notification between them.
pub async fn wire(endpoint: &str, name: &str) -> anyhow::Result<Wired> {
    let (s3, sqs) = clients(endpoint).await;
    s3.create_bucket().bucket(name).send().await?;
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no queue url"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow::anyhow!("no queue arn"))?;
    s3.put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .build()?,
                )
                .build(),
        )
        .send()
        .await?;
    Ok(Wired {
        s3,
        sqs,
        bucket: name.to_string(),
        queue_url,
    })
}

impl Wired {
    /// Uploads a file under `key`: one PutObject up to 1 GiB (moto announces a multipart
    /// upload twice, which would double the expected events), multipart above.
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let len = std::fs::metadata(path)?.len();
        const PART: u64 = 64 << 20;
        if len <= 1 << 30 {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from_path(path).await?)
                .send()
                .await?;
            return Ok(());
        }
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1;
        while offset < len {
            let n = PART.min(len - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(n))
                .build()
                .await?;
            let out = self
                .s3
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(body)
                .send()
                .await?;
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
            .await?;
        Ok(())
    }

    /// (visible, in flight) messages.
    pub async fn depth(&self) -> anyhow::Result<(u64, u64)> {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        let get = |k: &QueueAttributeName| attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((
            get(&QueueAttributeName::ApproximateNumberOfMessages),
            get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }
}
