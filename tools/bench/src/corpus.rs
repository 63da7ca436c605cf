//! The benchmark corpus, generated from a seed (no downloaded data): every run on every machine
//! gets the same bytes.
//!
//! - `cloudtrail`: gzip (level 6, as CloudTrail writes) `{"Records":[...]}` files of 200 to
//!   6000 records of a dozen kinds of calls (S3 data events, STS AssumeRole with credentials,
//!   EC2 RunInstances with nested instance sets, KMS with encryption contexts, console logins,
//!   errors…), random ids, IPs and keys; about 1.3 KB per record, 7–10× under gzip.
//! - `vpc_flow`: VPC flow logs v2, gzip text with the header line, about 110 B per line.
//! - `cloudwatch`: CloudWatch Logs subscription data as Firehose writes it: one gzip member per
//!   `DATA_MESSAGE` document (Lambda START/END/REPORT lines and application logs), many members
//!   per object.
//! - `large`: one CloudTrail object of at least 2 GiB uncompressed, generated streaming
//!   (never held in memory).
//!
//! Each corpus directory holds its objects and `manifest.json` (key, file, events, raw and gzip
//! bytes of every object): the runner expects exactly that many lines at the receiver.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// gzip level of generated objects (what CloudTrail, VPC flow logs and Firehose use).
pub const OBJECT_GZIP_LEVEL: u32 = 6;
/// 2024-01-01T00:00:00Z.
const EPOCH_2024: u64 = 1_704_067_200;

/// One kind of corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Cloudtrail,
    VpcFlow,
    Cloudwatch,
    Large,
}

impl Kind {
    /// Directory and phase name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cloudtrail => "cloudtrail",
            Kind::VpcFlow => "vpc_flow",
            Kind::Cloudwatch => "cloudwatch",
            Kind::Large => "large",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Cloudtrail,
            Kind::VpcFlow,
            Kind::Cloudwatch,
            Kind::Large,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    /// The collector's `processor` for this corpus.
    pub fn processor(self) -> &'static str {
        match self {
            Kind::Cloudtrail | Kind::Large => "cloudtrail",
            Kind::VpcFlow => "vpc_flow",
            Kind::Cloudwatch => "cloudwatch_logs",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Kind::Cloudtrail => 1,
            Kind::VpcFlow => 2,
            Kind::Cloudwatch => 3,
            Kind::Large => 4,
        }
    }
}

/// One generated object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// S3 key.
    pub key: String,
    /// File name inside the corpus directory.
    pub file: String,
    /// Events the collector must produce from it.
    pub events: u64,
    /// Decompressed size.
    pub raw_bytes: u64,
    /// Stored (gzip) size.
    pub gz_bytes: u64,
}

/// What a corpus directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: Kind,
    pub seed: u64,
    pub objects: Vec<ObjectEntry>,
}

impl Manifest {
    /// Sum of events.
    pub fn events(&self) -> u64 {
        self.objects.iter().map(|o| o.events).sum()
    }
    /// Sum of decompressed bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_bytes).sum()
    }
    /// Sum of stored bytes.
    pub fn gz_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.gz_bytes).sum()
    }
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(dir.join("manifest.json"))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Counts bytes written through it (the decompressed size).
struct Counting<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `2024-01-01T00:00:00Z` for a unix time.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

const HEX: &[u8] = b"0123456789abcdef";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGITS: &[u8] = b"0123456789";

const ACCOUNTS: [&str; 4] = [
    "123456789012",
    "210987654321",
    "555566667777",
    "999900001111",
];
const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-east-1",
    "eu-west-1",
    "us-west-2",
    "ap-southeast-2",
];
const ROLES: [&str; 8] = [
    "OrganizationAccountAccessRole",
    "AWSReservedSSO_AdministratorAccess_2f1c9a",
    "eks-node-group-role",
    "lambda-orders-exec",
    "GitHubActionsDeploy",
    "DatadogIntegrationRole",
    "AWSServiceRoleForConfig",
    "data-pipeline-etl",
];
const USERS: [&str; 6] = [
    "alice@example.com",
    "bob.smith",
    "ci-deployer",
    "terraform",
    "carol.jones@example.com",
    "svc-backup",
];
const AGENTS: [&str; 8] = [
    "aws-sdk-java/1.12.529 Linux/5.10.192-183.736.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.8+7-LTS java/17.0.8 vendor/Amazon.com_Inc. cfg/retry-mode/standard",
    "Boto3/1.34.11 md/Botocore#1.34.11 ua/2.0 os/linux#5.15.0-1051-aws md/arch#x86_64 lang/python#3.11.6 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.11",
    "aws-cli/2.15.4 Python/3.11.6 Darwin/23.2.0 exe/x86_64 prompt/off command/s3.cp",
    "Terraform/1.6.6 (+https://www.terraform.io) terraform-provider-aws/5.31.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5 md/GOOS#linux md/GOARCH#amd64",
    "AWS Internal",
    "console.amazonaws.com",
    "aws-sdk-go/1.48.13 (go1.21.4; linux; amd64) exec-env/AWS_ECS_FARGATE",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
];
const BUCKETS: [&str; 5] = [
    "acme-datalake-raw",
    "acme-prod-artifacts",
    "acme-cloudtrail-logs",
    "acme-backups-eu",
    "web-assets-static",
];
const CIPHERS: [&str; 3] = [
    "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
];
const INSTANCE_TYPES: [&str; 6] = [
    "t3.micro",
    "t3.large",
    "m6i.xlarge",
    "c6g.2xlarge",
    "r5.large",
    "g5.xlarge",
];

fn uuid(rng: &mut Rng, out: &mut String) {
    for (i, n) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        rng.push_chars(out, HEX, n);
    }
}

fn ip(rng: &mut Rng, out: &mut String) {
    if rng.chance(75) {
        // A small pool of office / NAT addresses: real trails repeat their callers.
        let n = rng.below(40);
        let _ = write!(out, "203.0.113.{}", 10 + n);
    } else {
        let _ = write!(
            out,
            "{}.{}.{}.{}",
            rng.range(1, 223),
            rng.below(256),
            rng.below(256),
            rng.range(1, 254)
        );
    }
}

/// Context shared by the records of one object (a trail file: one account, one region).
struct TrailCtx {
    account: &'static str,
    region: &'static str,
    /// Access keys in use in this file (sessions repeat).
    keys: Vec<String>,
    /// Role ids.
    role_ids: Vec<String>,
}

impl TrailCtx {
    fn new(rng: &mut Rng) -> Self {
        let account = *rng.pick(&ACCOUNTS);
        let region = *rng.pick(&REGIONS);
        let keys = (0..12)
            .map(|_| {
                let mut s = String::from("ASIA");
                rng.push_chars(&mut s, UPPER, 16);
                s
            })
            .collect();
        let role_ids = (0..ROLES.len())
            .map(|_| {
                let mut s = String::from("AROA");
                rng.push_chars(&mut s, UPPER, 17);
                s
            })
            .collect();
        TrailCtx {
            account,
            region,
            keys,
            role_ids,
        }
    }
}

/// Appends `"userIdentity":{...}` and returns whether the caller is an AWS service.
fn user_identity(
    rng: &mut Rng,
    c: &TrailCtx,
    time: &str,
    out: &mut String,
) -> Option<&'static str> {
    let roll = rng.below(100);
    if roll < 55 {
        let r = rng.below(ROLES.len() as u64) as usize;
        let role = ROLES[r];
        let session = if rng.chance(50) {
            (*rng.pick(&USERS)).to_string()
        } else {
            let mut s = String::from("i-0");
            rng.push_chars(&mut s, HEX, 16);
            s
        };
        let key = rng.pick(&c.keys).clone();
        let _ = write!(
            out,
            r#""userIdentity":{{"type":"AssumedRole","principalId":"{rid}:{session}","arn":"arn:aws:sts::{a}:assumed-role/{role}/{session}","accountId":"{a}","accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"{rid}","arn":"arn:aws:iam::{a}:role/{role}","accountId":"{a}","userName":"{role}"}},"webIdFederationData":{{}},"attributes":{{"creationDate":"{time}","mfaAuthenticated":"{mfa}"}}}}}},"#,
            rid = c.role_ids[r],
            a = c.account,
            mfa = rng.chance(20),
        );
        None
    } else if roll < 75 {
        let user = *rng.pick(&USERS);
        let mut id = String::new();
        rng.push_chars(&mut id, UPPER, 17);
        let mut key = String::new();
        rng.push_chars(&mut key, UPPER, 16);
        let _ = write!(
            out,
            r#""userIdentity":{{"type":"IAMUser","principalId":"AIDA{id}","arn":"arn:aws:iam::{a}:user/{user}","accountId":"{a}","accessKeyId":"AKIA{key}","userName":"{user}"}},"#,
            a = c.account
        );
        None
    } else if roll < 98 {
        let svc = *rng.pick(&[
            "ec2.amazonaws.com",
            "lambda.amazonaws.com",
            "s3.amazonaws.com",
            "config.amazonaws.com",
            "autoscaling.amazonaws.com",
            "cloudformation.amazonaws.com",
        ]);
        let _ = write!(
            out,
            r#""userIdentity":{{"type":"AWSService","invokedBy":"{svc}"}},"#
        );
        Some(svc)
    } else {
        let _ = write!(
            out,
            r#""userIdentity":{{"type":"Root","principalId":"{a}","arn":"arn:aws:iam::{a}:root","accountId":"{a}","accessKeyId":""}},"#,
            a = c.account
        );
        None
    }
}

/// Appends one CloudTrail record (no separator) at unix time `t`.
fn cloudtrail_record(rng: &mut Rng, c: &TrailCtx, t: u64, out: &mut String) {
    let time = iso8601(t);
    let a = c.account;
    let region = c.region;
    out.push_str(r#"{"eventVersion":""#);
    out.push_str(if rng.chance(70) { "1.09" } else { "1.08" });
    out.push_str(r#"","#);
    let service_caller = user_identity(rng, c, &time, out);
    // (eventSource, eventName, readOnly, data event)
    let kind = rng.below(100);
    let (source, name, read_only, data) = match kind {
        0..=21 => (
            "kms",
            *rng.pick(&["Decrypt", "GenerateDataKey", "Encrypt"]),
            true,
            false,
        ),
        22..=41 => (
            "s3",
            *rng.pick(&["GetObject", "PutObject", "HeadObject"]),
            false,
            true,
        ),
        42..=53 => ("sts", "AssumeRole", true, false),
        54..=65 => (
            "ec2",
            *rng.pick(&[
                "DescribeInstances",
                "DescribeSecurityGroups",
                "DescribeVolumes",
            ]),
            true,
            false,
        ),
        66..=69 => ("ec2", "RunInstances", false, false),
        70..=77 => (
            "logs",
            *rng.pick(&["CreateLogStream", "DescribeLogGroups"]),
            false,
            false,
        ),
        78..=84 => ("ssm", "GetParameter", true, false),
        85..=90 => ("lambda", "Invoke", false, true),
        91..=94 => (
            "iam",
            *rng.pick(&["GetRole", "ListRoles", "ListAttachedRolePolicies"]),
            true,
            false,
        ),
        95..=97 => ("dynamodb", *rng.pick(&["GetItem", "Query"]), true, true),
        _ => ("signin", "ConsoleLogin", false, false),
    };
    let src_host = if source == "signin" {
        "signin.amazonaws.com".to_string()
    } else {
        format!("{source}.amazonaws.com")
    };
    let _ = write!(
        out,
        r#""eventTime":"{time}","eventSource":"{src_host}","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":""#
    );
    match service_caller {
        Some(svc) => out.push_str(svc),
        None => ip(rng, out),
    }
    out.push_str(r#"","userAgent":""#);
    match service_caller {
        Some(svc) => out.push_str(svc),
        None => out.push_str(rng.pick::<&str>(&AGENTS)),
    }
    out.push('"');
    let denied = rng.chance(3);
    if denied {
        let _ = write!(
            out,
            r#","errorCode":"AccessDenied","errorMessage":"User: arn:aws:sts::{a}:assumed-role/{role}/session is not authorized to perform: {source}:{name} because no identity-based policy allows the {source}:{name} action""#,
            role = rng.pick(&ROLES)
        );
    }
    out.push_str(r#","requestParameters":"#);
    let mut resources = String::new();
    let mut response = String::from("null");
    let mut additional = String::new();
    match (source, name) {
        ("kms", _) => {
            let mut key = String::new();
            uuid(rng, &mut key);
            let bucket = rng.pick(&BUCKETS);
            let _ = write!(
                out,
                r#"{{"encryptionContext":{{"aws:s3:arn":"arn:aws:s3:::{bucket}/data/{}/part-{:05}.parquet"}},"encryptionAlgorithm":"SYMMETRIC_DEFAULT","keyId":"arn:aws:kms:{region}:{a}:key/{key}"}}"#,
                iso8601(t - rng.below(86_400))[..10].replace('-', "/"),
                rng.below(20_000)
            );
            let _ = write!(
                resources,
                r#"[{{"accountId":"{a}","type":"AWS::KMS::Key","ARN":"arn:aws:kms:{region}:{a}:key/{key}"}}]"#
            );
        }
        ("s3", _) => {
            let bucket = rng.pick(&BUCKETS);
            let mut obj = format!(
                "{}/{}/",
                rng.pick(&["events", "exports", "tmp", "models", "logs/app"]),
                &iso8601(t)[..10]
            );
            rng.push_chars(&mut obj, HEX, 12);
            obj.push_str(rng.pick::<&str>(&[".json.gz", ".parquet", ".csv", ".bin"]));
            let _ = write!(
                out,
                r#"{{"bucketName":"{bucket}","Host":"{bucket}.s3.{region}.amazonaws.com","key":"{obj}"}}"#
            );
            let mut id2 = String::new();
            rng.push_chars(&mut id2, B64, 76);
            let (inb, outb) = if name == "PutObject" {
                (rng.below(50_000_000), 0)
            } else {
                (0, rng.below(50_000_000))
            };
            let _ = write!(
                additional,
                r#","additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"{}","bytesTransferredIn":{inb},"AuthenticationMethod":"AuthHeader","x-amz-id-2":"{id2}","bytesTransferredOut":{outb}}}"#,
                rng.pick(&CIPHERS)
            );
            let _ = write!(
                resources,
                r#"[{{"type":"AWS::S3::Object","ARN":"arn:aws:s3:::{bucket}/{obj}"}},{{"accountId":"{a}","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::{bucket}"}}]"#
            );
            if name == "PutObject" {
                let mut etag = String::new();
                rng.push_chars(&mut etag, HEX, 32);
                response = format!(
                    r#"{{"x-amz-server-side-encryption":"aws:kms","x-amz-server-side-encryption-aws-kms-key-id":"arn:aws:kms:{region}:{a}:key/mrk-{etag}"}}"#
                );
            }
        }
        ("sts", _) => {
            let r = rng.below(ROLES.len() as u64) as usize;
            let session = rng.pick(&USERS).replace('@', "-");
            let ext = if rng.chance(30) {
                r#","externalId":"devo-collector-7f3a""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"{{"roleArn":"arn:aws:iam::{a}:role/{role}","roleSessionName":"{session}","durationSeconds":3600{ext}}}"#,
                role = ROLES[r]
            );
            if !denied {
                let mut key = String::new();
                rng.push_chars(&mut key, UPPER, 16);
                let mut token = String::from("IQoJb3JpZ2luX2VjE");
                let n = 200 + rng.below(150) as usize;
                rng.push_chars(&mut token, B64, n);
                response = format!(
                    r#"{{"credentials":{{"accessKeyId":"ASIA{key}","sessionToken":"{token}","expiration":"{}"}},"assumedRoleUser":{{"assumedRoleId":"{}:{session}","arn":"arn:aws:sts::{a}:assumed-role/{}/{session}"}}}}"#,
                    iso8601(t + 3600),
                    c.role_ids[r],
                    ROLES[r]
                );
            }
            let _ = write!(
                resources,
                r#"[{{"accountId":"{a}","type":"AWS::IAM::Role","ARN":"arn:aws:iam::{a}:role/{}"}}]"#,
                ROLES[r]
            );
        }
        ("ec2", "RunInstances") => {
            let mut ami = String::new();
            rng.push_chars(&mut ami, HEX, 17);
            let itype = rng.pick(&INSTANCE_TYPES);
            let mut token = String::new();
            uuid(rng, &mut token);
            let _ = write!(
                out,
                r#"{{"instancesSet":{{"items":[{{"imageId":"ami-{ami}","minCount":1,"maxCount":1}}]}},"instanceType":"{itype}","blockDeviceMapping":{{}},"monitoring":{{"enabled":false}},"disableApiTermination":false,"disableApiStop":false,"clientToken":"{token}","tagSpecificationSet":{{"items":[{{"resourceType":"instance","tags":[{{"key":"Name","value":"{}-{}"}},{{"key":"team","value":"{}"}}]}}]}}}}"#,
                rng.pick(&["web", "worker", "batch", "bastion"]),
                rng.below(100),
                rng.pick(&["payments", "search", "platform"])
            );
            let mut iid = String::new();
            rng.push_chars(&mut iid, HEX, 17);
            let (o3, o4) = (rng.below(256), rng.range(1, 254));
            response = format!(
                r#"{{"requestId":"{req}","reservationId":"r-0{res}","ownerId":"{a}","groupSet":{{}},"instancesSet":{{"items":[{{"instanceId":"i-0{iid}","imageId":"ami-{ami}","currentInstanceBootMode":"legacy-bios","instanceState":{{"code":0,"name":"pending"}},"privateDnsName":"ip-10-0-{o3}-{o4}.ec2.internal","amiLaunchIndex":0,"productCodes":{{}},"instanceType":"{itype}","launchTime":{lt},"placement":{{"availabilityZone":"{region}a","tenancy":"default"}},"monitoring":{{"state":"disabled"}},"subnetId":"subnet-0{sub}","vpcId":"vpc-0{vpc}","privateIpAddress":"10.0.{o3}.{o4}","stateReason":{{"code":"pending","message":"pending"}},"architecture":"x86_64","rootDeviceType":"ebs","rootDeviceName":"/dev/xvda","blockDeviceMapping":{{}},"virtualizationType":"hvm","hypervisor":"xen","groupSet":{{"items":[{{"groupId":"sg-0{sg}","groupName":"default"}}]}},"sourceDestCheck":true,"networkInterfaceSet":{{"items":[{{"networkInterfaceId":"eni-0{eni}","subnetId":"subnet-0{sub}","vpcId":"vpc-0{vpc}","ownerId":"{a}","status":"in-use","privateIpAddress":"10.0.{o3}.{o4}"}}]}},"ebsOptimized":false,"enaSupport":true,"metadataOptions":{{"state":"pending","httpTokens":"required","httpPutResponseHopLimit":2,"httpEndpoint":"enabled"}}}}]}},"requesterId":"{req2}"}}"#,
                req = {
                    let mut s = String::new();
                    uuid(rng, &mut s);
                    s
                },
                res = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, HEX, 16);
                    s
                },
                lt = t * 1000,
                sub = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, HEX, 16);
                    s
                },
                vpc = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, HEX, 16);
                    s
                },
                sg = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, HEX, 16);
                    s
                },
                eni = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, HEX, 16);
                    s
                },
                req2 = {
                    let mut s = String::new();
                    rng.push_chars(&mut s, DIGITS, 12);
                    s
                },
            );
        }
        ("ec2", _) => {
            let _ = write!(
                out,
                r#"{{"maxResults":{},"filterSet":{{"items":[{{"name":"{}","valueSet":{{"items":[{{"value":"{}"}}]}}}}]}}}}"#,
                rng.pick(&[5, 100, 1000]),
                rng.pick(&["tag:Name", "instance-state-name", "vpc-id", "group-name"]),
                rng.pick(&["web-*", "running", "vpc-0a1b2c3d", "default"])
            );
        }
        ("logs", _) => {
            let mut s = String::new();
            rng.push_chars(&mut s, HEX, 32);
            let _ = write!(
                out,
                r#"{{"logGroupName":"/aws/lambda/{}","logStreamName":"{}/[$LATEST]{s}"}}"#,
                rng.pick(&[
                    "orders-api",
                    "image-resize",
                    "auth-authorizer",
                    "etl-loader"
                ]),
                &iso8601(t)[..10].replace('-', "/")
            );
        }
        ("ssm", _) => {
            let _ = write!(
                out,
                r#"{{"name":"/{}/{}/{}","withDecryption":{}}}"#,
                rng.pick(&["prod", "staging", "dev"]),
                rng.pick(&["orders", "payments", "search"]),
                rng.pick(&["db/password", "api/key", "feature-flags", "queue/url"]),
                rng.chance(50)
            );
        }
        ("lambda", _) => {
            let f = rng.pick(&[
                "orders-api",
                "image-resize",
                "auth-authorizer",
                "etl-loader",
            ]);
            let _ = write!(
                out,
                r#"{{"functionName":"arn:aws:lambda:{region}:{a}:function:{f}","invocationType":"{}","logType":"None"}}"#,
                rng.pick(&["Event", "RequestResponse"])
            );
            let _ = write!(
                resources,
                r#"[{{"accountId":"{a}","type":"AWS::Lambda::Function","ARN":"arn:aws:lambda:{region}:{a}:function:{f}"}}]"#
            );
        }
        ("iam", _) => {
            let _ = write!(out, r#"{{"roleName":"{}"}}"#, rng.pick(&ROLES));
        }
        ("dynamodb", _) => {
            let _ = write!(
                out,
                r#"{{"tableName":"{}","key":{{"pk":{{"S":"ORDER#{}"}},"sk":{{"S":"ITEM#{}"}}}},"consistentRead":false}}"#,
                rng.pick(&["orders", "sessions", "inventory"]),
                rng.below(10_000_000),
                rng.below(100)
            );
        }
        _ => {
            out.push_str("null");
            response = format!(
                r#"{{"ConsoleLogin":"{}"}}"#,
                if rng.chance(90) { "Success" } else { "Failure" }
            );
            let _ = write!(
                additional,
                r#","additionalEventData":{{"LoginTo":"https://console.aws.amazon.com/console/home?region={region}&state=hashArgs%23&isauthcode=true","MobileVersion":"No","MFAIdentifier":"arn:aws:iam::{a}:mfa/{}","MFAUsed":"Yes"}}"#,
                rng.pick(&USERS)
            );
        }
    }
    if denied {
        response = "null".to_string();
    }
    let _ = write!(
        out,
        r#","responseElements":{response}{additional},"requestID":""#
    );
    if source == "s3" {
        rng.push_chars(out, b"0123456789ABCDEF", 16);
    } else {
        uuid(rng, out);
    }
    out.push_str(r#"","eventID":""#);
    uuid(rng, out);
    let _ = write!(out, r#"","readOnly":{read_only}"#);
    if !resources.is_empty() {
        let _ = write!(out, r#","resources":{resources}"#);
    }
    let event_type = if source == "signin" {
        "AwsConsoleSignIn"
    } else {
        "AwsApiCall"
    };
    let _ = write!(
        out,
        r#","eventType":"{event_type}","managementEvent":{},"recipientAccountId":"{a}""#,
        !data
    );
    if source == "sts" && rng.chance(50) {
        out.push_str(r#","sharedEventID":""#);
        uuid(rng, out);
        out.push('"');
    }
    let _ = write!(
        out,
        r#","eventCategory":"{}""#,
        if data { "Data" } else { "Management" }
    );
    if service_caller.is_none() && source != "signin" {
        let _ = write!(
            out,
            r#","tlsDetails":{{"tlsVersion":"TLSv1.{}","cipherSuite":"{}","clientProvidedHostHeader":"{source}.{region}.amazonaws.com"}}"#,
            rng.pick(&[2, 3]),
            rng.pick(&CIPHERS)
        );
    }
    out.push('}');
}

/// Writes a CloudTrail file of `records` records starting at `t0` to `w`; returns the events.
fn write_cloudtrail<W: Write>(
    rng: &mut Rng,
    records: u64,
    t0: u64,
    w: &mut W,
) -> std::io::Result<u64> {
    let ctx = TrailCtx::new(rng);
    let mut buf = String::with_capacity(64 * 1024);
    buf.push_str(r#"{"Records":["#);
    for i in 0..records {
        if i > 0 {
            buf.push(',');
        }
        cloudtrail_record(rng, &ctx, t0 + i * 300 / records.max(1), &mut buf);
        if buf.len() > 60 * 1024 {
            w.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    buf.push_str("]}");
    w.write_all(buf.as_bytes())?;
    Ok(records)
}

/// Writes a VPC flow log v2 file of `lines` records (plus the header) to `w`.
fn write_vpc_flow<W: Write>(rng: &mut Rng, lines: u64, t0: u64, w: &mut W) -> std::io::Result<u64> {
    let account = *rng.pick(&ACCOUNTS);
    let enis: Vec<String> = (0..24)
        .map(|_| {
            let mut s = String::from("eni-0");
            rng.push_chars(&mut s, HEX, 16);
            s
        })
        .collect();
    let mut buf = String::with_capacity(64 * 1024);
    buf.push_str("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n");
    for i in 0..lines {
        let eni = rng.pick(&enis);
        let start = t0 + i * 300 / lines.max(1);
        let end = start + rng.range(1, 60);
        if rng.chance(2) {
            let _ = writeln!(
                buf,
                "2 {account} {eni} - - - - - - - {start} {end} - NODATA"
            );
        } else {
            let inbound = rng.chance(50);
            let mut local = String::new();
            let _ = write!(local, "10.0.{}.{}", rng.below(256), rng.range(1, 254));
            let mut remote = String::new();
            if rng.chance(30) {
                let _ = write!(remote, "10.0.{}.{}", rng.below(256), rng.range(1, 254));
            } else {
                let _ = write!(
                    remote,
                    "{}.{}.{}.{}",
                    rng.range(1, 223),
                    rng.below(256),
                    rng.below(256),
                    rng.range(1, 254)
                );
            }
            let service = *rng.pick(&[443u64, 443, 443, 80, 22, 53, 3306, 5432, 6379, 8080]);
            let ephemeral = rng.range(1024, 65535);
            let proto = if service == 53 {
                17
            } else if rng.chance(2) {
                1
            } else {
                6
            };
            let packets = if rng.chance(70) {
                rng.range(1, 20)
            } else {
                rng.range(20, 5000)
            };
            let bytes = packets * rng.range(40, 1500);
            let action = if rng.chance(8) { "REJECT" } else { "ACCEPT" };
            let (src, dst, sp, dp) = if inbound {
                (&remote, &local, ephemeral, service)
            } else {
                (&local, &remote, ephemeral, service)
            };
            let _ = writeln!(
                buf,
                "2 {account} {eni} {src} {dst} {sp} {dp} {proto} {packets} {bytes} {start} {end} {action} OK"
            );
        }
        if buf.len() > 60 * 1024 {
            w.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    w.write_all(buf.as_bytes())?;
    Ok(lines)
}

/// One CloudWatch Logs `DATA_MESSAGE` document of `events` log events (Lambda logs).
fn cloudwatch_document(rng: &mut Rng, events: u64, t0: u64, out: &mut String) {
    let f = *rng.pick(&[
        "orders-api",
        "image-resize",
        "auth-authorizer",
        "etl-loader",
        "payments-webhook",
    ]);
    let mut stream = String::new();
    rng.push_chars(&mut stream, HEX, 32);
    let _ = write!(
        out,
        r#"{{"messageType":"DATA_MESSAGE","owner":"{}","logGroup":"/aws/lambda/{f}","logStream":"{}/[$LATEST]{stream}","subscriptionFilters":["devo-{f}"],"logEvents":["#,
        rng.pick(&ACCOUNTS),
        &iso8601(t0)[..10].replace('-', "/")
    );
    let mut request = String::new();
    uuid(rng, &mut request);
    let mut id_prefix = String::new();
    rng.push_chars(&mut id_prefix, DIGITS, 40);
    for i in 0..events {
        if i > 0 {
            out.push(',');
        }
        let ms = t0 * 1000 + i * 37 + rng.below(30);
        out.push_str(r#"{"id":""#);
        out.push_str(&id_prefix);
        let _ = write!(out, "{:016}", i * 1_000_003 + rng.below(1000));
        let _ = write!(out, r#"","timestamp":{ms},"message":""#);
        let step = i % 6;
        let iso = iso8601(ms / 1000);
        let iso = format!("{}.{:03}Z", &iso[..19], ms % 1000);
        match step {
            0 => {
                request.clear();
                uuid(rng, &mut request);
                let _ = write!(out, r#"START RequestId: {request} Version: $LATEST\n"#);
            }
            1 | 2 => {
                let _ = write!(
                    out,
                    r#"{{\"level\":\"{}\",\"timestamp\":\"{iso}\",\"requestId\":\"{request}\",\"msg\":\"{}\",\"path\":\"/api/v1/{}/{}\",\"status\":{},\"latencyMs\":{}.{},\"customer\":\"c-{}\"}}\n"#,
                    rng.pick(&["info", "info", "info", "warn", "error"]),
                    rng.pick(&[
                        "request served",
                        "cache miss",
                        "retrying upstream",
                        "validation failed"
                    ]),
                    rng.pick(&["orders", "customers", "payments"]),
                    rng.below(1_000_000),
                    rng.pick(&[200, 200, 201, 400, 404, 500]),
                    rng.below(900),
                    rng.below(10),
                    rng.below(100_000)
                );
            }
            3 => {
                let _ = write!(
                    out,
                    r#"{iso}\t{request}\tINFO\tProcessed batch of {} records from s3://{}/incoming/{}.json in {} ms\n"#,
                    rng.below(500),
                    rng.pick(&BUCKETS),
                    rng.below(1 << 40),
                    rng.below(3000)
                );
            }
            4 => {
                let _ = write!(out, r#"END RequestId: {request}\n"#);
            }
            _ => {
                let d = rng.below(3000);
                let _ = write!(
                    out,
                    r#"REPORT RequestId: {request}\tDuration: {d}.{:02} ms\tBilled Duration: {} ms\tMemory Size: 512 MB\tMax Memory Used: {} MB\t\n"#,
                    rng.below(100),
                    d + 1,
                    rng.range(60, 400)
                );
            }
        }
        out.push_str(r#""}"#);
    }
    out.push_str("]}");
}

/// What one generator call needs.
struct Plan {
    kind: Kind,
    index: u64,
    size: u64,
    t0: u64,
}

fn object_key(kind: Kind, index: u64, t0: u64, rng: &mut Rng) -> (String, String) {
    let date = iso8601(t0);
    let (y, m, d, hh, mm) = (
        &date[0..4],
        &date[5..7],
        &date[8..10],
        &date[11..13],
        &date[14..16],
    );
    let mut tail = String::new();
    rng.push_chars(&mut tail, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 16);
    let key = match kind {
        Kind::Cloudtrail | Kind::Large => format!(
            "AWSLogs/123456789012/CloudTrail/us-east-1/{y}/{m}/{d}/123456789012_CloudTrail_us-east-1_{y}{m}{d}T{hh}{mm}Z_{tail}.json.gz"
        ),
        Kind::VpcFlow => format!(
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/{y}/{m}/{d}/123456789012_vpcflowlogs_us-east-1_fl-0a1b2c3d4e5f67890_{y}{m}{d}T{hh}{mm}Z_{tail}.log.gz"
        ),
        Kind::Cloudwatch => format!(
            "firehose/{y}/{m}/{d}/{hh}/cwl-to-s3-1-{y}-{m}-{d}-{hh}-{mm}-00-{tail}"
        ),
    };
    (key, format!("{:05}.gz", index))
}

/// Generates one object into `dir`.
fn generate_object(dir: &Path, seed: u64, plan: &Plan) -> std::io::Result<ObjectEntry> {
    let mut rng = Rng::new(seed).fork(plan.kind.salt() << 32 | plan.index);
    let (key, file) = object_key(plan.kind, plan.index, plan.t0, &mut rng);
    let path = dir.join(&file);
    let out = BufWriter::with_capacity(256 * 1024, File::create(&path)?);
    let level = Compression::new(OBJECT_GZIP_LEVEL);
    let (events, raw_bytes, mut out) = match plan.kind {
        Kind::Cloudtrail | Kind::Large => {
            let mut w = Counting {
                inner: GzEncoder::new(out, level),
                bytes: 0,
            };
            let records = if plan.kind == Kind::Large {
                // Stream until the size is reached: a batch of records at a time.
                let mut total = 0u64;
                let ctx = TrailCtx::new(&mut rng);
                let mut buf = String::with_capacity(128 * 1024);
                buf.push_str(r#"{"Records":["#);
                while w.bytes + buf.len() as u64 + 2 < plan.size {
                    if total > 0 {
                        buf.push(',');
                    }
                    cloudtrail_record(&mut rng, &ctx, plan.t0 + total / 1000, &mut buf);
                    total += 1;
                    if buf.len() > 96 * 1024 {
                        w.write_all(buf.as_bytes())?;
                        buf.clear();
                    }
                }
                buf.push_str("]}");
                w.write_all(buf.as_bytes())?;
                total
            } else {
                write_cloudtrail(&mut rng, plan.size, plan.t0, &mut w)?
            };
            (records, w.bytes, w.inner.finish()?)
        }
        Kind::VpcFlow => {
            let mut w = Counting {
                inner: GzEncoder::new(out, level),
                bytes: 0,
            };
            let lines = write_vpc_flow(&mut rng, plan.size, plan.t0, &mut w)?;
            (lines, w.bytes, w.inner.finish()?)
        }
        Kind::Cloudwatch => {
            // Firehose: one gzip member per record it received, concatenated.
            let mut out = out;
            let mut events = 0;
            let mut raw = 0;
            let mut doc = String::with_capacity(64 * 1024);
            for d in 0..plan.size {
                doc.clear();
                let n = if rng.chance(20) {
                    rng.range(50, 400)
                } else {
                    rng.range(1, 40)
                };
                cloudwatch_document(&mut rng, n, plan.t0 + d, &mut doc);
                let mut gz = GzEncoder::new(out, level);
                gz.write_all(doc.as_bytes())?;
                out = gz.finish()?;
                events += n;
                raw += doc.len() as u64;
            }
            (events, raw, out)
        }
    };
    out.flush()?;
    drop(out);
    let gz_bytes = std::fs::metadata(&path)?.len();
    Ok(ObjectEntry {
        key,
        file,
        events,
        raw_bytes,
        gz_bytes,
    })
}

/// Generates a corpus of `kind` of about `target_raw_bytes` decompressed bytes into `dir`
/// (created), on `threads` threads; writes and returns the manifest.
pub fn generate(
    dir: &Path,
    kind: Kind,
    seed: u64,
    target_raw_bytes: u64,
    threads: usize,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(dir)?;
    let mut sizer = Rng::new(seed ^ kind.salt());
    let mut plans = Vec::new();
    // Approximate raw size of one unit (record, line, document) to plan object counts.
    let (unit, lo, hi) = match kind {
        Kind::Cloudtrail => (1300u64, 200u64, 6000u64),
        Kind::VpcFlow => (110, 2_000, 60_000),
        Kind::Cloudwatch => (16_000, 50, 400),
        Kind::Large => (1, target_raw_bytes, target_raw_bytes),
    };
    let mut planned = 0u64;
    let mut index = 0u64;
    while planned < target_raw_bytes {
        let size = sizer.range(lo, hi);
        plans.push(Plan {
            kind,
            index,
            size,
            t0: EPOCH_2024 + index * 300,
        });
        planned += size * unit;
        index += 1;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(plan) = plans.get(i) else { break };
                let r = generate_object(dir, seed, plan);
                results.lock().expect("lock").push((i, r));
            });
        }
    });
    let mut results = results.into_inner().expect("lock");
    results.sort_by_key(|(i, _)| *i);
    let mut objects = Vec::new();
    for (_, r) in results {
        objects.push(r?);
    }
    let manifest = Manifest {
        kind,
        seed,
        objects,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

/// One small gzip CloudTrail object of `records` records, in memory (the latency probe's).
pub fn cloudtrail_object_gz(seed: u64, records: u64) -> std::io::Result<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(OBJECT_GZIP_LEVEL));
    write_cloudtrail(&mut rng, records, EPOCH_2024, &mut gz)?;
    gz.finish()
}

/// A decompressed object of `kind` (not `Large`) with `units` records, lines or documents,
/// in memory (for micro-benchmarks).
pub fn raw_object(kind: Kind, seed: u64, units: u64) -> std::io::Result<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    match kind {
        Kind::Cloudtrail | Kind::Large => {
            write_cloudtrail(&mut rng, units, EPOCH_2024, &mut out)?;
        }
        Kind::VpcFlow => {
            write_vpc_flow(&mut rng, units, EPOCH_2024, &mut out)?;
        }
        Kind::Cloudwatch => {
            let mut doc = String::new();
            for d in 0..units {
                doc.clear();
                let n = rng.range(1, 40);
                cloudwatch_document(&mut rng, n, EPOCH_2024 + d, &mut doc);
                out.extend_from_slice(doc.as_bytes());
            }
        }
    }
    Ok(out)
}

/// `root/<kind>`.
pub fn dir_of(root: &Path, kind: Kind) -> PathBuf {
    root.join(kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(EPOCH_2024), "2024-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn records_are_json_and_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_cloudtrail(&mut Rng::new(1), 50, EPOCH_2024, &mut a).unwrap();
        write_cloudtrail(&mut Rng::new(1), 50, EPOCH_2024, &mut b).unwrap();
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["Records"].as_array().unwrap().len(), 50);
        let mut doc = String::new();
        cloudwatch_document(&mut Rng::new(2), 7, EPOCH_2024, &mut doc);
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["logEvents"].as_array().unwrap().len(), 7);
        let mut vpc = Vec::new();
        write_vpc_flow(&mut Rng::new(3), 10, EPOCH_2024, &mut vpc).unwrap();
        assert_eq!(vpc.iter().filter(|&&c| c == b'\n').count(), 11);
    }
}
