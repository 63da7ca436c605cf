//! End-to-end, through moto and the two real binaries: the notification shapes other than a
//! plain S3 → SQS event reach the relay's stdout as Devo lines, each event exactly once with
//! its tag, and every message is deleted once the relay confirmed it (the queue ends empty).
//!
//! - SNS: S3 → SNS topic → SQS, with the SNS envelope and with raw message delivery (moto
//!   delivers both itself; each test first peeks at the queue to prove the shape it got).
//! - EventBridge: S3 → default event bus → rule `{"source":["aws.s3"],"detail-type":["Object
//!   Created"]}` → SQS, all done by moto; keys with space, `+` and `=` are used as given (an
//!   object `a+b` and an object `a b` each give their own line). A `PutEvents` entry (source
//!   `aws.s3`, which moto accepts) announcing a form-encoded key proves the decoded fallback.
//! - CrowdStrike FDR: a batch message sent by hand to a plain queue names three gzip JSON-lines
//!   files; `processor = "fdr"`, default tag.
//! - CloudTrail's own SNS message (`s3Bucket`, `s3ObjectKey` with two keys) published on an SNS
//!   topic; `processor = "cloudtrail"`, a tag template filled from each record.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use aws_sdk_s3::types::{
    Event, EventBridgeConfiguration, NotificationConfiguration, TopicConfiguration,
};
use serde_json::{json, Value};

/// The harness's input tag (`start_collector`).
const TAG: &str = "my.app.sluice.test";

/// (tag, message) of every Devo line the relay printed, counted; panics on anything else.
fn devo(relay: &Proc) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for line in relay.stdout.snapshot() {
        let (host, tag, message) =
            parse_devo_line(&line).unwrap_or_else(|| panic!("not a Devo line: {line:?}"));
        assert_eq!(host, "testhost");
        *seen
            .entry((tag.to_string(), message.to_string()))
            .or_insert(0) += 1;
    }
    seen
}

/// Each (tag, message) once.
fn once(expected: &[(&str, &str)]) -> BTreeMap<(String, String), usize> {
    let map: BTreeMap<_, _> = expected
        .iter()
        .map(|(t, m)| ((t.to_string(), m.to_string()), 1))
        .collect();
    assert_eq!(map.len(), expected.len(), "expected lines must be distinct");
    map
}

/// Waits until every expected line arrived and nothing more can arrive (queue empty, every
/// received message handled, everything the relay accepted printed), then checks that nothing
/// else and nothing twice arrived (no redelivery).
async fn settle(
    relay: &Proc,
    collector: &Proc,
    wired: &Wired,
    expected: &BTreeMap<(String, String), usize>,
) {
    let total: usize = expected.values().sum();
    let arrived = wait_for(Duration::from_secs(25), || {
        devo(relay).values().sum::<usize>() >= total
    })
    .await;
    assert!(arrived, "expected {expected:#?}\ngot {:#?}", devo(relay));
    assert!(
        settled(wired, collector, Some(relay), Duration::from_secs(20)).await,
        "not settled: queue {:?}, collector (received, handled) {:?}",
        wired.depth().await,
        collector_messages(collector)
    );
    assert_eq!(&devo(relay), expected);
    assert_eq!(wired.depth().await, (0, 0));
}

/// `compact` JSON spread over lines with spaces around `:` (outside strings), as a
/// pretty-printer would write it: the collector must give back exactly `compact`.
fn spread(compact: &str) -> String {
    let mut out = String::new();
    let (mut in_string, mut escaped) = (false, false);
    for c in compact.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                out.push_str("\n    ");
            }
            ',' => out.push_str(",\n    "),
            ':' => out.push_str(" : "),
            '}' | ']' => {
                out.push_str("\n  ");
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Creates an SNS topic; returns its ARN.
fn create_topic(moto: &Moto, name: &str) -> String {
    let answer = sns_call(moto, "CreateTopic", &[("Name", name)]);
    xml_text(&answer, "TopicArn").unwrap_or_else(|| panic!("no TopicArn in {answer}"))
}

/// Subscribes a queue to a topic, with raw message delivery or the SNS envelope.
fn subscribe_queue(moto: &Moto, topic_arn: &str, queue_arn: &str, raw: bool) {
    let answer = sns_call(
        moto,
        "Subscribe",
        &[
            ("TopicArn", topic_arn),
            ("Protocol", "sqs"),
            ("Endpoint", queue_arn),
        ],
    );
    let subscription =
        xml_text(&answer, "SubscriptionArn").unwrap_or_else(|| panic!("no arn in {answer}"));
    if raw {
        sns_call(
            moto,
            "SetSubscriptionAttributes",
            &[
                ("SubscriptionArn", &subscription),
                ("AttributeName", "RawMessageDelivery"),
                ("AttributeValue", "true"),
            ],
        );
    }
}

/// A bucket whose `s3:ObjectCreated:*` events go to a topic with the queue subscribed.
async fn wire_through_sns(moto: &Moto, name: &str, raw: bool) -> Wired {
    let (wired, queue_arn) = unwired(moto, name, name).await;
    let topic_arn = create_topic(moto, name);
    subscribe_queue(moto, &topic_arn, &queue_arn, raw);
    wired
        .s3
        .put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(
            NotificationConfiguration::builder()
                .topic_configurations(
                    TopicConfiguration::builder()
                        .topic_arn(topic_arn)
                        .events(Event::S3ObjectCreated)
                        .build()
                        .expect("topic configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("put notification");
    wired
}

/// S3 → SNS → SQS: two objects, one gzip with an odd key, announced behind SNS (`raw` false:
/// the envelope; true: raw message delivery, the bare S3 event).
async fn s3_through_sns(raw: bool) {
    let name = if raw { "snsraw" } else { "snsenvelope" };
    let moto = Moto::start();
    let wired = wire_through_sns(&moto, name, raw).await;
    wired
        .put("sns/plain.log", b"sns one\nsns two\n".to_vec())
        .await;
    wired
        .put("sns/a b+c=d.log", gzip(b"odd key behind sns\n"))
        .await;

    // Prove the path: the queue holds what SNS made of the S3 events.
    let bodies = wired.peek().await;
    let events: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}")))
        .filter(|v: &Value| !v.to_string().contains("s3:TestEvent"))
        .collect();
    assert_eq!(events.len(), 2, "queue holds {bodies:#?}");
    for event in &events {
        if raw {
            assert!(event.get("Type").is_none(), "not raw: {event}");
            assert_eq!(event["Records"][0]["eventSource"], "aws:s3");
        } else {
            assert_eq!(event["Type"], "Notification", "no envelope: {event}");
            let inner: Value = serde_json::from_str(event["Message"].as_str().unwrap()).unwrap();
            assert_eq!(inner["Records"][0]["eventSource"], "aws:s3");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector = start_collector(dir.path(), &moto, &wired, port, "");
    let expected = once(&[
        (TAG, "sns one"),
        (TAG, "sns two"),
        (TAG, "odd key behind sns"),
    ]);
    settle(&relay, &collector, &wired, &expected).await;
    assert!(collector.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_events_behind_an_sns_envelope() {
    s3_through_sns(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_events_by_sns_raw_message_delivery() {
    s3_through_sns(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_object_created_keys_as_given_then_decoded() {
    let moto = Moto::start();
    let (wired, queue_arn) = unwired(&moto, "ebbucket", "ebqueue").await;
    let pattern = json!({"source": ["aws.s3"], "detail-type": ["Object Created"]});
    events_call(
        &moto,
        "PutRule",
        &json!({"Name": "s3-created", "EventPattern": pattern.to_string(), "State": "ENABLED"}),
    );
    events_call(
        &moto,
        "PutTargets",
        &json!({"Rule": "s3-created", "Targets": [{"Id": "queue", "Arn": queue_arn}]}),
    );
    wired
        .s3
        .put_bucket_notification_configuration()
        .bucket(&wired.bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .event_bridge_configuration(EventBridgeConfiguration::builder().build())
                .build(),
        )
        .send()
        .await
        .expect("put notification");

    // Through moto's S3 → EventBridge → SQS. `pri/a+b.log` and `pri/a b.log` both exist:
    // each announcement must fetch its own object (the key as given first).
    wired
        .put("dir/a b+c=d.log", b"odd key line\n".to_vec())
        .await;
    wired.put("pri/a+b.log", b"plus object\n".to_vec()).await;
    wired.put("pri/a b.log", gzip(b"space object\n")).await;

    // A second bucket, no notification: its object is announced by a PutEvents entry whose
    // key is form-encoded, so only the decoded fallback finds it.
    wired
        .s3
        .create_bucket()
        .bucket("ebplain")
        .send()
        .await
        .unwrap();
    wired
        .s3
        .put_object()
        .bucket("ebplain")
        .key("enc/x y+z=w.log")
        .body(b"found by its decoded key\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let detail = json!({
        "version": "0",
        "bucket": {"name": "ebplain"},
        "object": {"key": "enc/x+y%2Bz%3Dw.log", "size": 25, "etag": "0"},
        "reason": "PutObject"
    });
    let answer = events_call(
        &moto,
        "PutEvents",
        &json!({"Entries": [{
            "Source": "aws.s3",
            "DetailType": "Object Created",
            "Resources": ["arn:aws:s3:::ebplain"],
            "Detail": detail.to_string(),
        }]}),
    );
    assert!(
        answer.contains("\"FailedEntryCount\": 0") || answer.contains("\"FailedEntryCount\":0"),
        "{answer}"
    );

    // Prove the path: four EventBridge events on the queue, keys not encoded by moto.
    let bodies = wired.peek().await;
    let mut keys: Vec<String> = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap_or_else(|e| panic!("{e}: {b}")))
        .inspect(|v| {
            assert_eq!(v["source"], "aws.s3", "{v}");
            assert_eq!(v["detail-type"], "Object Created", "{v}");
        })
        .map(|v| v["detail"]["object"]["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "dir/a b+c=d.log",
            "enc/x+y%2Bz%3Dw.log",
            "pri/a b.log",
            "pri/a+b.log"
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector = start_collector(dir.path(), &moto, &wired, port, "");
    let expected = once(&[
        (TAG, "odd key line"),
        (TAG, "plus object"),
        (TAG, "space object"),
        (TAG, "found by its decoded key"),
    ]);
    settle(&relay, &collector, &wired, &expected).await;
    assert_eq!(
        collector
            .stderr
            .matching(&["decoded spelling", "enc/x y+z=w.log"])
            .len(),
        1,
        "the fallback was not logged once"
    );
    assert!(collector.stderr.matching(&["ERROR"]).is_empty());
    assert!(collector.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_fdr_batch_delivers_every_listed_file() {
    use md5::Digest;
    let moto = Moto::start();
    let (wired, _) = unwired(&moto, "fdrbucket", "fdrqueue").await;
    let id = "f0714ca5-3689-448d-b5cc-582a6f7a56b1";
    // Lines as FDR writes them would be compact; these have spaces to show re-compaction.
    let files: [(String, &[&str]); 3] = [
        (
            format!("data/{id}/part-00000.gz"),
            &[
                r#"{"event_simpleName": "ProcessRollup2", "aid": "a1", "CommandLine": "cmd.exe /c \"echo a, b: c\"", "timestamp": "1700000000000"}"#,
                r#"{"event_simpleName": "DnsRequest", "aid": "a1", "DomainName": "example.com"}"#,
            ],
        ),
        (
            format!("data/{id}/part-00001.gz"),
            &[r#"{"event_simpleName": "NetworkConnectIP4", "aid": "a2", "RemotePort": 443}"#],
        ),
        (
            format!("fdrv2/aidmaster/{id}/part-00000.gz"),
            &[
                r#"{"aid": "a1", "ComputerName": "host-1", "Version": "Windows 11"}"#,
                r#"{"aid": "a2", "ComputerName": "host-2", "Version": "Ubuntu 24.04"}"#,
            ],
        ),
    ];
    let mut listed = Vec::new();
    for (path, lines) in &files {
        let body = gzip(format!("{}\n", lines.join("\n")).as_bytes());
        let checksum: String = md5::Md5::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        listed.push(json!({"path": path, "size": body.len(), "checksum": checksum}));
        wired.put(path, body).await;
    }
    let total: u64 = listed.iter().map(|f| f["size"].as_u64().unwrap()).sum();
    let message = json!({
        "cid": "0123456789abcdef0123456789abcdef",
        "timestamp": 1_700_000_000_000u64,
        "fileCount": listed.len(),
        "totalSize": total,
        "bucket": "fdrbucket",
        "pathPrefix": format!("data/{id}"),
        "files": listed,
    });
    wired.send(&message.to_string()).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector =
        start_collector_untagged(dir.path(), &moto, &wired, port, "processor = \"fdr\"");
    let fdr = "my.app.crowdstrike.fdr";
    let expected = once(&[
        (
            fdr,
            r#"{"event_simpleName":"ProcessRollup2","aid":"a1","CommandLine":"cmd.exe /c \"echo a, b: c\"","timestamp":"1700000000000"}"#,
        ),
        (
            fdr,
            r#"{"event_simpleName":"DnsRequest","aid":"a1","DomainName":"example.com"}"#,
        ),
        (
            fdr,
            r#"{"event_simpleName":"NetworkConnectIP4","aid":"a2","RemotePort":443}"#,
        ),
        (
            fdr,
            r#"{"aid":"a1","ComputerName":"host-1","Version":"Windows 11"}"#,
        ),
        (
            fdr,
            r#"{"aid":"a2","ComputerName":"host-2","Version":"Ubuntu 24.04"}"#,
        ),
    ]);
    settle(&relay, &collector, &wired, &expected).await;
    assert_eq!(
        collector
            .stderr
            .matching(&["object delivered", "fdrbucket"])
            .len(),
        3
    );
    assert!(collector.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_sns_message_delivers_both_objects_record_by_record() {
    let moto = Moto::start();
    let (wired, queue_arn) = unwired(&moto, "ctbucket", "ctqueue").await;
    let topic_arn = create_topic(&moto, "cloudtrail");
    subscribe_queue(&moto, &topic_arn, &queue_arn, false);

    let first = [
        r#"{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:01Z","eventName":"GetObject","awsRegion":"eu-west-1","recipientAccountId":"111122223333","requestParameters":{"bucketName":"b","key":"a, b: {c}"},"userAgent":"aws-cli/2 \"quoted\"","n":1.50}"#,
        r#"{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:02Z","eventName":"ListBuckets","awsRegion":"eu-west-1","resources":[{"ARN":"arn:aws:s3:::b"},{"ARN":"arn:aws:s3:::c"}]}"#,
    ];
    let second = [
        r#"{"eventVersion":"1.09","eventTime":"2024-01-01T00:05:00Z","eventName":"ConsoleLogin","awsRegion":"us-east-1","recipientAccountId":"444455556666","additionalEventData":{"MFAUsed":"Yes"}}"#,
    ];
    let keys = [
        "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/01/111122223333_CloudTrail_eu-west-1_20240101T0000Z_aaaa.json.gz",
        "AWSLogs/444455556666/CloudTrail/us-east-1/2024/01/01/444455556666_CloudTrail_us-east-1_20240101T0005Z_bbbb.json.gz",
    ];
    // The first object pretty-printed, the second compact as CloudTrail writes it.
    let pretty: Vec<String> = first.iter().map(|r| spread(r)).collect();
    let doc = format!(
        "{{\n  \"Records\" : [\n  {}\n  ]\n}}\n",
        pretty.join(",\n  ")
    );
    wired.put(keys[0], gzip(doc.as_bytes())).await;
    let doc = format!("{{\"Records\":[{}]}}", second.join(","));
    wired.put(keys[1], gzip(doc.as_bytes())).await;
    let message = json!({"s3Bucket": "ctbucket", "s3ObjectKey": keys});
    sns_call(
        &moto,
        "Publish",
        &[("TopicArn", &topic_arn), ("Message", &message.to_string())],
    );

    let bodies = wired.peek().await;
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    let envelope: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["Message"], message.to_string());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = start_relay(dir.path(), port, "");
    let mut collector = start_collector_untagged(
        dir.path(),
        &moto,
        &wired,
        port,
        "processor = \"cloudtrail\"\ntag = \"cloud.aws.cloudtrail.events.{recipientAccountId|none}.{awsRegion}\"",
    );
    let expected = once(&[
        (
            "cloud.aws.cloudtrail.events.111122223333.eu-west-1",
            first[0],
        ),
        ("cloud.aws.cloudtrail.events.none.eu-west-1", first[1]),
        (
            "cloud.aws.cloudtrail.events.444455556666.us-east-1",
            second[0],
        ),
    ]);
    settle(&relay, &collector, &wired, &expected).await;
    assert!(collector.terminate().success());
}
