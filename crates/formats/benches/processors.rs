//! Throughput of the processors on generated in-memory objects (already decompressed), through
//! a sink that only counts: the split + frame cost per byte of raw input, one core.
//!
//! Run: `cargo bench -p sluice-formats --bench processors` (numbers in BENCHMARKS.md, "Processors").
//! It does not measure decompression or batching.

use std::hint::black_box;
use std::io::BufReader;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_formats::processor::{
    process, EventSink, ObjectContext, ProcessorKind, ProcessorSpec, SinkError,
};

/// Counts events and bytes, like the cheapest possible batch stage.
#[derive(Default)]
pub struct Count {
    pub events: u64,
    pub bytes: u64,
}

impl EventSink for Count {
    fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError> {
        self.events += 1;
        self.bytes += (tag.len() + message.len() + 2) as u64;
        Ok(())
    }
}

/// Target size of each generated object.
const OBJECT_BYTES: usize = 16 << 20;

/// A CloudTrail-like record of about 1.3 KB.
fn cloudtrail_record(i: usize) -> String {
    format!(
        concat!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"AssumedRole","principalId":"AROAEXAMPLE{i:06}:session","#,
            r#""arn":"arn:aws:sts::123456789012:assumed-role/Admin/session-{i}","accountId":"123456789012","accessKeyId":"ASIAEXAMPLE{i:06}","#,
            r#""sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROAEXAMPLE","arn":"arn:aws:iam::123456789012:role/Admin","#,
            r#""accountId":"123456789012","userName":"Admin"}},"webIdFederationData":{{}},"attributes":{{"creationDate":"2024-01-01T00:00:00Z","#,
            r#""mfaAuthenticated":"false"}}}}}},"eventTime":"2024-01-01T00:{m:02}:{s:02}Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","#,
            r#""awsRegion":"eu-west-1","sourceIPAddress":"10.1.{a}.{b}","userAgent":"[aws-sdk-java/1.12.0 Linux/5.10 OpenJDK_64-Bit_Server_VM/25.302-b08]","#,
            r#""requestParameters":{{"bucketName":"example-bucket","Host":"example-bucket.s3.eu-west-1.amazonaws.com","key":"data/2024/01/01/object-{i}.json"}},"#,
            r#""responseElements":null,"additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","bytesTransferredIn":0,"#,
            r#""AuthenticationMethod":"AuthHeader","x-amz-id-2":"EXAMPLEabcdefghijklmnopqrstuvwxyz0123456789=","bytesTransferredOut":{i}}},"#,
            r#""requestID":"EXAMPLE{i:010}","eventID":"3d6c5a2e-0000-4000-8000-{i:012}","readOnly":true,"resources":[{{"type":"AWS::S3::Object","#,
            r#""ARN":"arn:aws:s3:::example-bucket/data/2024/01/01/object-{i}.json"}},{{"accountId":"123456789012","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::example-bucket"}}],"#,
            r#""eventType":"AwsApiCall","managementEvent":false,"recipientAccountId":"123456789012","eventCategory":"Data"}}"#
        ),
        i = i,
        m = i % 60,
        s = (i / 60) % 60,
        a = i % 250,
        b = (i / 250) % 250
    )
}

pub fn cloudtrail_object() -> Vec<u8> {
    let mut out = br#"{"Records":["#.to_vec();
    let mut i = 0;
    while out.len() < OBJECT_BYTES {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(cloudtrail_record(i).as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

pub fn vpc_flow_object() -> Vec<u8> {
    let mut out = b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n".to_vec();
    let mut i = 0usize;
    while out.len() < OBJECT_BYTES {
        out.extend_from_slice(
            format!(
                "2 123456789012 eni-0a1b2c3d4e5f{:05} 10.0.{}.{} 172.31.{}.{} {} 443 6 {} {} 1700000000 1700000060 ACCEPT OK\n",
                i % 100_000,
                i % 250,
                (i / 250) % 250,
                (i / 7) % 250,
                i % 200,
                1024 + i % 60000,
                1 + i % 90,
                40 + i % 150_000
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

pub fn json_lines_object() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < OBJECT_BYTES {
        out.extend_from_slice(cloudtrail_record(i).as_bytes());
        out.push(b'\n');
        i += 1;
    }
    out
}

pub fn cloudwatch_object() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while out.len() < OBJECT_BYTES {
        out.extend_from_slice(br#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/example-function","logStream":"2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef","subscriptionFilters":["to-firehose"],"logEvents":["#);
        for j in 0..100 {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(
                format!(
                    r#"{{"id":"3531157611194862287403387646297985399291993888609324{i:05}","timestamp":{},"message":"2024-01-01T00:00:00.000Z\t0f8bb4c8-d6b2-4f05-ac17-af7e2ba005{j:02}\tINFO\tprocessed request {i} with status 200 in 12 ms for user example-{j}\n"}}"#,
                    1_700_000_000_000u64 + i as u64
                )
                .as_bytes(),
            );
            i += 1;
        }
        out.extend_from_slice(b"]}");
    }
    out
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, ProcessorSpec, Vec<u8>); 5] = [
        ("cloudtrail", cloudtrail_spec(), cloudtrail_object()),
        (
            "vpc_flow",
            ProcessorSpec::new(ProcessorKind::VpcFlow),
            vpc_flow_object(),
        ),
        ("vpc_flow_json", vpc_json_spec(), vpc_flow_object()),
        (
            "json_lines",
            ProcessorSpec::new(ProcessorKind::JsonLines),
            json_lines_object(),
        ),
        (
            "cloudwatch_logs",
            ProcessorSpec::new(ProcessorKind::CloudwatchLogs),
            cloudwatch_object(),
        ),
    ];
    let mut group = c.benchmark_group("processors");
    group.sample_size(10);
    for (name, spec, data) in &cases {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut sink = Count::default();
                let mut input = BufReader::with_capacity(64 * 1024, &data[..]);
                let stats = process(
                    &mut input,
                    spec,
                    &ObjectContext::new("bucket", "key"),
                    &mut sink,
                )
                .expect("generated data processes");
                black_box((stats.events, sink.bytes))
            })
        });
    }
    group.finish();
}

pub fn cloudtrail_spec() -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(ProcessorKind::Cloudtrail);
    spec.expand_field = Some("Records".into());
    spec
}

pub fn vpc_json_spec() -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(ProcessorKind::VpcFlow);
    spec.vpc_flow_json = true;
    spec
}

criterion_group!(benches, bench);
criterion_main!(benches);
