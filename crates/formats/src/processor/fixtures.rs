//! End-to-end tests of the object path over the project's own fixtures
//! (`crates/formats/fixtures/objects/`, written by `make_fixtures.py` there): one input
//! configuration with selectors, as a user would write it, then for each fixture `select` →
//! `decompress::open` → `process`. These are the tests crates/formats/docs/formats.md cites, row
//! by row, including one per bad input.

use std::io::BufReader;

use super::testutil::{Collect, TAG_CAP};
use super::{
    process, ObjectContext, ObjectStats, ProcessError, Processing, ProcessingConfig, Selection,
};
use crate::decompress;

/// The input table of the tests: every processor behind a selector.
const CONFIG: &str = r#"
exclude = ['\.tmp$']

[[selectors]]
key = '/CloudTrail(-Digest)?/'
processor = "cloudtrail"
tag = "cloud.aws.cloudtrail.events.{recipientAccountId|unknown}.{awsRegion|global}"

[[selectors]]
key = 'vpcflowlogs'
processor = "vpc_flow"
vpc_flow_json = true

[[selectors]]
key = '(^|/)[0-9A-Z]{12,14}\.20\d{2}-\d{2}-\d{2}-\d{2}\.[0-9a-z]{8}\.gz$'
processor = "w3c"

[[selectors]]
key = 'elasticloadbalancing|access-logs/'
processor = "elb"

[[selectors]]
key = '/Config/'
processor = "json"
expand_field = "configurationItems"

[[selectors]]
key = '^firehose/cwl/'
processor = "cloudwatch_logs"

[[selectors]]
key = '^firehose/eventbridge/(?P<source>[a-z]+)/'
processor = "extract"
extract_field = "detail"
tag = "my.app.findings.{source}"

[[selectors]]
key = '^(data|fdrv2)/'
processor = "fdr"

[[selectors]]
key = '\.jsonl$'
processor = "json_lines"

[[selectors]]
key = '\.parquet$'
processor = "parquet"

[[selectors]]
key = 'latin1/'
encoding = "latin1"

[[selectors]]
key = '^app/java/'
multiline = { pattern = '^\d{4}-\d{2}-\d{2} ', negate = true, match = "after" }

[[selectors]]
key = 'KafkaBrokerLogs/'
multiline = { pattern = '^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}\] ', negate = true, match = "after" }
"#;

fn processing() -> Processing {
    toml::from_str::<ProcessingConfig>(CONFIG)
        .expect("config parses")
        .resolve(TAG_CAP)
        .expect("config resolves")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/objects/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Selects, opens and processes `data` as the object `key`.
fn run_object(
    p: &Processing,
    key: &str,
    data: &[u8],
) -> (Result<ObjectStats, ProcessError>, Collect) {
    let mut sink = Collect::default();
    let Selection::Process { spec, hints } = p.select(key) else {
        panic!("{key} skipped")
    };
    let (_, mut reader) =
        decompress::open(Box::new(BufReader::new(data)), &hints).expect("open never fails here");
    let r = process(
        &mut reader,
        spec,
        &ObjectContext::new("bucket", key),
        &mut sink,
    );
    (r, sink)
}

fn run_ok(key: &str, name: &str) -> (ObjectStats, Collect) {
    let (r, sink) = run_object(&processing(), key, &fixture(name));
    (r.unwrap_or_else(|e| panic!("{name}: {e}")), sink)
}

#[test]
fn cloudtrail_pretty_printed_with_tag_template() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/05/01/111122223333_CloudTrail_eu-west-1_20240501T1000Z_x.json.gz",
        "cloudtrail_pretty.json.gz",
    );
    assert_eq!(stats.events, 2);
    let msgs = sink.messages();
    assert!(msgs[0].starts_with(r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","#));
    assert!(msgs[0].contains(r#""userAgent":"aws-cli/2.0 \"quoted\"""#));
    assert!(msgs[1].contains(r#""tags":[1,2.5,true]"#));
    assert_eq!(
        sink.tags(),
        vec![
            "cloud.aws.cloudtrail.events.111122223333.eu-west-1",
            "cloud.aws.cloudtrail.events.111122223333.us-east-1"
        ]
    );
}

#[test]
fn cloudtrail_digest_skipped_by_default() {
    let key = "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2024/05/01/x.json.gz";
    assert!(matches!(processing().select(key), Selection::Skip { .. }));
    // With include_digests the digest is one event.
    let p = toml::from_str::<ProcessingConfig>("processor = 'cloudtrail'\ninclude_digests = true")
        .unwrap()
        .resolve(TAG_CAP)
        .unwrap();
    let (r, sink) = run_object(&p, key, &fixture("cloudtrail_digest.json.gz"));
    assert_eq!(r.unwrap().events, 1);
    assert!(sink.messages()[0].starts_with(r#"{"awsAccountId":"111122223333","#));
}

#[test]
fn vpc_flow_custom_header_as_json() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/vpcflowlogs/eu-west-1/2024/05/01/111122223333_vpcflowlogs_eu-west-1_fl-1_20240501T1000Z_x.log.gz",
        "vpcflow_v5_custom.log.gz",
    );
    assert_eq!((stats.events, stats.skipped_lines), (3, 1));
    let msgs = sink.messages();
    assert!(msgs[0].starts_with(r#"{"version":"5","vpc-id":"vpc-0a1","subnet-id":"subnet-0b2","#));
    assert!(msgs[2].ends_with(r#""log-status":"NODATA","flow-direction":"-","traffic-path":"-"}"#));
    assert_eq!(sink.tags()[0], "cloud.aws.vpc.flow");
}

#[test]
fn cloudfront_w3c_comments_dropped() {
    let (stats, sink) = run_ok(
        "cf-logs/E1ABCDEFGHIJKL.2024-05-01-10.abcd1234.gz",
        "cloudfront_w3c.log.gz",
    );
    assert_eq!((stats.events, stats.skipped_lines), (2, 2));
    let msgs = sink.messages();
    assert!(msgs[0].starts_with("2024-05-01\t10:00:00\tFRA56-P1\t512"));
    assert!(msgs[1].ends_with("10.0.0.1,\\x2010.0.0.2"));
    assert_eq!(sink.tags()[0], "web.aws.cloudfront.access-w3c");
}

#[test]
fn load_balancer_and_s3_access_lines() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/elasticloadbalancing/eu-west-1/2024/05/01/111122223333_elasticloadbalancing_eu-west-1_app.my-alb.50dc6c495c0c9188_20240501T1000Z_192.0.2.1_x.log.gz",
        "alb_nlb_elb_s3.log",
    );
    assert_eq!(stats.events, 4);
    let msgs = sink.messages();
    assert!(msgs[0].starts_with("https ") && msgs[0].ends_with("TID_1"));
    assert!(msgs[1].starts_with("tls 2.0 "));
    assert_eq!(sink.tags()[0], "web.aws.alb.access");
    // Same processor, S3 server access key: its own default tag.
    let (_, sink) = run_ok(
        "access-logs/2024-05-01-10-00-00-0123456789ABCDEF",
        "alb_nlb_elb_s3.log",
    );
    assert_eq!(sink.tags()[0], "web.aws.s3.access");
}

#[test]
fn json_lines_compacted() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/GuardDuty/eu-west-1/2024/05/01/x.jsonl",
        "json_lines.jsonl",
    );
    assert_eq!(stats.events, 2);
    let msgs = sink.messages();
    assert_eq!(
        msgs[0],
        r#"{"timestamp":1714557600000,"formatVersion":1,"action":"BLOCK","httpRequest":{"clientIp":"192.0.2.4","uri":"/login","headers":[{"name":"Host","value":"x"}]}}"#
    );
    assert!(
        msgs[1].ends_with(r#""Class":"IN"}]}"#),
        "CR removed: {}",
        msgs[1]
    );
    assert_eq!(sink.tags()[0], "cloud.aws.guardduty.findings");
}

#[test]
fn config_snapshot_items_expanded() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/Config/eu-west-1/2024/5/1/ConfigSnapshot/111122223333_Config_eu-west-1_ConfigSnapshot_20240501T100000Z_x.json.gz",
        "config_snapshot.json.gz",
    );
    assert_eq!(stats.events, 3);
    assert!(sink.messages()[1].contains(r#""tags":{"env":"prod"}"#));
    assert_eq!(sink.tags()[0], "cloud.aws.configlogs.events");
}

#[test]
fn cloudwatch_logs_from_firehose_skip_control_messages() {
    let (stats, sink) = run_ok(
        "firehose/cwl/2024/05/01/10/stream-1-2024-05-01-10-00-00-uuid",
        "cwl_firehose.gz",
    );
    assert_eq!((stats.events, stats.skipped_documents), (3, 1));
    let msgs = sink.messages();
    assert_eq!(
        msgs[1],
        r#"{"id":"2","timestamp":1714557600002,"message":"line one\nline two","logGroup":"/aws/lambda/fn","logStream":"2024/05/01/[$LATEST]abc","owner":"111122223333"}"#
    );
    assert_eq!(sink.tags()[0], "cloud.aws.cloudwatch.logs");
}

#[test]
fn fdr_json_lines() {
    let (stats, sink) = run_ok(
        "data/31c788e5-6979-46e7-9a94-bb8df912899c/part-00000.gz",
        "fdr_part-00000.gz",
    );
    assert_eq!(stats.events, 2);
    assert!(sink.messages()[0]
        .contains(r#""CommandLine":"C:\\Windows\\system32\\cmd.exe /c \"echo hi\"""#));
    assert_eq!(sink.tags()[0], "my.app.crowdstrike.fdr");
}

#[test]
fn extract_detail_of_concatenated_envelopes_with_key_capture_tag() {
    let (stats, sink) = run_ok(
        "firehose/eventbridge/guardduty/2024/05/01/x",
        "eventbridge_concatenated.json",
    );
    assert_eq!(stats.events, 2);
    assert_eq!(
        sink.messages(),
        vec![
            r#"{"id":"f-1","severity":5,"title":"multi\nline"}"#,
            "a plain string detail"
        ]
    );
    assert_eq!(sink.tags(), vec!["my.app.findings.guardduty"; 2]);
}

#[test]
fn lines_from_bzip2_without_final_newline() {
    let (stats, sink) = run_ok(
        "AWSLogs/111122223333/KafkaBrokerLogs/eu-west-1/c-1/2024-05-01-10/Broker-1_10-00_x.log.bz2",
        "msk_broker.log.bz2",
    );
    assert_eq!(stats.events, 2);
    assert!(sink.messages()[1].ends_with("(kafka.server.ReplicaManager)"));
    assert_eq!(sink.tags()[0], "my.app.sluice.lines");
}

#[test]
fn imperva_envelope_with_zlib_payload() {
    let (stats, sink) = run_ok("imperva/1_1.log", "imperva_1_1.log");
    assert_eq!((stats.events, stats.skipped_lines), (2, 7));
    assert!(sink.messages()[0].ends_with("cs1=a\\=b"));
}

#[test]
fn bad_truncated_gzip() {
    let (r, _) = run_object(&processing(), "x.log.gz", &fixture("bad_truncated.log.gz"));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ProcessError::Read { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof),
        "{e:?}"
    );
    assert!(e.to_string().contains("gzip: truncated data"), "{e}");
}

#[test]
fn bad_garbage_after_gzip_member() {
    let (r, sink) = run_object(
        &processing(),
        "x.log.gz",
        &fixture("bad_garbage_after_member.log.gz"),
    );
    let e = r.unwrap_err();
    assert!(e.to_string().contains("gzip: corrupt data"), "{e}");
    assert!(matches!(e, ProcessError::Read { offset: 10, .. }), "{e:?}");
    assert_eq!(
        sink.messages(),
        vec!["good line"],
        "the good member's events went out"
    );
}

#[test]
fn bad_invalid_utf8_replaced_or_latin1_never_dropped() {
    let data = fixture("bad_latin1.log");
    let (r, sink) = run_object(&processing(), "plain/x.log", &data);
    let stats = r.unwrap();
    assert_eq!((stats.events, stats.invalid_utf8), (3, 2));
    assert_eq!(
        sink.messages(),
        vec!["caf\u{FFFD} ok", "na\u{FFFD}ve", "déjà vu €"]
    );
    let (r, sink) = run_object(&processing(), "latin1/x.log", &data);
    assert_eq!(r.unwrap().invalid_utf8, 2);
    assert_eq!(sink.messages(), vec!["café ok", "naïve", "déjà vu €"]);
}

#[test]
fn bad_file_claiming_parquet() {
    let (r, _) = run_object(
        &processing(),
        "x.parquet",
        &fixture("bad_not_parquet.parquet"),
    );
    assert!(
        matches!(r, Err(ProcessError::Parquet { size: 44, .. })),
        "{r:?}"
    );
    let (r, _) = run_object(&processing(), "x.parquet", &fixture("json_lines.jsonl"));
    let e = r.unwrap_err();
    assert!(matches!(e, ProcessError::NotParquet { .. }), "{e:?}");
    assert!(e.to_string().contains("not a parquet file"), "{e}");
}

#[test]
fn bad_5_mib_single_line_is_truncated_and_counted() {
    let mut data = vec![b'a'; 5 << 20];
    data.push(b'\n');
    data.extend_from_slice(b"short\n");
    let (r, sink) = run_object(&processing(), "big.log", &data);
    let stats = r.unwrap();
    assert_eq!((stats.events, stats.truncated), (2, 1));
    assert_eq!(sink.0[0].1.len(), 1 << 20);
}

#[test]
fn a_bad_object_leaves_the_next_one_unaffected() {
    let p = processing();
    let (r, _) = run_object(&p, "x.log.gz", &fixture("bad_truncated.log.gz"));
    assert!(r.is_err());
    let (r, sink) = run_object(
        &p,
        "firehose/cwl/2024/05/01/10/stream-1",
        &fixture("cwl_firehose.gz"),
    );
    assert_eq!(r.unwrap().events, 3);
    assert_eq!(sink.0.len(), 3);
}

#[test]
fn excluded_and_marker_keys_are_skipped() {
    let p = processing();
    for key in [
        "AWSLogs/111122223333/ELBAccessLogTestFile",
        "AWSLogs/111122223333/Config/ConfigWritabilityCheckFile",
        "out/_SUCCESS",
        "x.tmp",
    ] {
        assert!(matches!(p.select(key), Selection::Skip { .. }), "{key}");
    }
}

#[test]
fn java_stack_trace_is_one_event_per_record() {
    let (stats, sink) = run_ok("app/java/2024/05/01/app.log", "java_stacktrace.log");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[1].starts_with("2024-05-01 10:00:01,456 ERROR [worker-1] com.example.Job - job failed\\njava.lang.IllegalStateException"));
    assert!(msgs[1].contains("\\nCaused by: java.io.FileNotFoundException"));
    assert!(msgs[1].ends_with("\\n\t... 2 more"));
    assert!(
        msgs.iter().all(|m| !m.contains('\n')),
        "no raw LF reaches the sink"
    );
    assert_eq!((stats.escaped_newlines, stats.multiline_cut_lines), (1, 0));
}

#[test]
fn msk_broker_log_is_one_event_per_record() {
    let (stats, sink) = run_ok(
        "AWSLogs/KafkaBrokerLogs/eu-west-1/cluster-1/2024-01-01-00/b-1-0.log.gz",
        "msk_broker_multiline.log.gz",
    );
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert_eq!(
        msgs[1],
        "[2024-01-01 00:00:01,000] INFO KafkaConfig values: \\n\tadvertised.listeners = \
         PLAINTEXT://b-1.example:9092\\n\tauto.create.topics.enable = false\\n\tbroker.id = 1\\n \
         (kafka.server.KafkaConfig)"
    );
    assert!(msgs[2].ends_with("\\norg.apache.kafka.common.errors.NotLeaderOrFollowerException: This server is not the leader for that topic-partition."));
    // The object ends without a final LF: its last record is flushed, not lost.
    assert_eq!(
        msgs[3],
        "[2024-01-01 00:00:03,000] WARN slow (kafka.server.ReplicaManager)"
    );
    assert_eq!(stats.escaped_newlines, 2);
}
