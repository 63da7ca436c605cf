//! Runs the public sample objects of `../shared/samples/` (next to the repo, outside it; never
//! copied in) through decompression, selection and the processors, prints what each gives, and
//! checks the counts and first events that were worked out by hand (see
//! crates/formats/docs/formats.md, "Checked against samples"). Ignored by default: run with
//! `cargo test -p sluice-formats --lib processor::samples -- --ignored --nocapture`
//! (`SLUICE_SAMPLES` overrides the directory; the default is relative to this crate's manifest).

use std::io::BufReader;
use std::path::PathBuf;

use super::testutil::{Collect, TAG_CAP};
use super::{process, ObjectContext, ProcessingConfig, Selection};
use crate::decompress;

/// One sample: its path under the samples directory, the input's configuration (TOML), the
/// events expected, and a string the first event must start with.
struct Case {
    path: &'static str,
    config: &'static str,
    events: u64,
    first: &'static str,
}

const CASES: &[Case] = &[
    Case {
        path: "cloudtrail/cloudtrail_records.json.gz",
        config: r#"processor = "cloudtrail""#,
        events: 2,
        first: r#"{"eventVersion":"1.08","userIdentity":{"type":"AWSService","#,
    },
    Case {
        path: "cloudtrail_digest/cloudtrail_digest_elastic.json",
        config: "processor = \"cloudtrail\"\ninclude_digests = true",
        events: 1,
        first: r#"{"awsAccountId":"#,
    },
    Case {
        path: "cloudtrail_digest/cloudtrail_digest_empty_awsdocs.json",
        config: "processor = \"cloudtrail\"\ninclude_digests = true",
        events: 1,
        first: r#"{"awsAccountId":"#,
    },
    Case {
        path: "vpcflow/vpcflow_v2_default.log.gz",
        config: r#"processor = "vpc_flow""#,
        events: 3,
        first: "2 ",
    },
    Case {
        path: "vpcflow/111111111111_vpcflowlogs_eu-west-2_fl-0dcbf7c4c2483c6b6_20220221T1955Z_7fe2e5f7.log.gz",
        config: "processor = \"vpc_flow\"\nvpc_flow_json = true",
        events: 5,
        first: r#"{"version":"2","account-id":"111111111111","#,
    },
    Case {
        path: "vpcflow/vpcflow_v5_all_fields_headerless_line_elastic.log",
        config: r#"processor = "vpc_flow""#,
        events: 1,
        first: "5 ",
    },
    Case {
        path: "vpcflow/vpcflow_v8_ecs_rejectreason_headerless_line_elastic.log",
        config: r#"processor = "vpc_flow""#,
        events: 1,
        first: "",
    },
    Case {
        path: "vpcflow/111111111111_vpcflowlogs_eu-west-3_fl-032a163fae170ae52_20220831T1255Z_2ad4bef5.parquet",
        config: r#"processor = "parquet""#,
        events: 7,
        first: r#"{"version":2,"account_id":"#,
    },
    Case {
        path: "securitylake/ocsf_1.1_vpcflow_securitylake.parquet",
        config: r#"processor = "parquet""#,
        events: 3,
        first: "{",
    },
    Case {
        path: "cloudwatch_firehose/firehose_cwl_concatenated_multimember.gz",
        config: r#"processor = "cloudwatch_logs""#,
        events: 21,
        first: r#"{"id":"#,
    },
    Case {
        path: "cloudwatch_firehose/firehose_cwl_concatenated_decompressed.json",
        config: "processor = \"cloudwatch_logs\"\ncloudwatch_message_only = true",
        events: 21,
        first: "2020-03-05T16:30:36.113Z\t",
    },
    Case {
        path: "cloudwatch_firehose/cwl_data_message_datadog.json",
        config: r#"processor = "cloudwatch_logs""#,
        events: 19,
        first: r#"{"id":"#,
    },
    Case {
        path: "elb/alb_access.log.gz",
        config: r#"processor = "elb""#,
        events: 2,
        first: "http",
    },
    Case {
        path: "elb/nlb_access.log.gz",
        config: r#"processor = "elb""#,
        events: 2,
        first: "tls 2.0 ",
    },
    Case {
        path: "cloudfront/cloudfront_standard.log.gz",
        config: "processor = \"w3c\"\nw3c_json = true",
        events: 2,
        first: r#"{"date":"#,
    },
    Case {
        path: "s3_access/s3_server_access.log",
        config: r#"processor = "elb""#,
        events: 1,
        first: "",
    },
    Case {
        path: "waf/waf_v2.log.gz",
        config: r#"processor = "json_lines""#,
        events: 1,
        first: r#"{"timestamp":"#,
    },
    Case {
        path: "guardduty/guardduty_findings_subset_elastic.jsonl",
        config: r#"processor = "json_lines""#,
        events: 2,
        first: "{",
    },
    Case {
        path: "route53_resolver/route53_resolver_query_subset_elastic.log",
        config: r#"processor = "json_lines""#,
        events: 6,
        first: "{",
    },
    Case {
        path: "network_firewall/network_firewall_alert_netflow_tls_elastic.log",
        config: r#"processor = "json_lines""#,
        events: 3,
        first: r#"{"firewall_name":"#,
    },
    Case {
        path: "crowdstrike_fdr/part-00000.gz",
        config: r#"processor = "fdr""#,
        events: 5,
        first: "{",
    },
    Case {
        path: "crowdstrike_fdr/fdrv2_aidmaster_elastic.jsonl",
        config: r#"processor = "fdr""#,
        events: 5,
        first: "{",
    },
    Case {
        path: "imperva/CONSTRUCTED_1509732_1.log",
        config: r#"processor = "lines""#,
        events: 2,
        first: "CEF:0|Incapsula|",
    },
    Case {
        path: "imperva/CONSTRUCTED_1509732_2_uncompressed.log",
        config: r#"processor = "lines""#,
        events: 2,
        first: "CEF:0|Incapsula|",
    },
    Case {
        path: "imperva/imperva_cef_lines_elastic.log",
        config: r#"processor = "lines""#,
        events: 2,
        first: "CEF:0|Incapsula|",
    },
    Case {
        path: "msk/msk_broker.log.gz",
        config: r#"processor = "lines""#,
        events: 2,
        first: "[",
    },
];

fn samples_dir() -> PathBuf {
    std::env::var_os("SLUICE_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/samples"
            ))
        })
}

#[test]
#[ignore = "reads ../shared/samples, outside the repo"]
fn samples() {
    let dir = samples_dir();
    let mut failures = Vec::new();
    println!(
        "| sample | processor | codec | events | skipped lines/docs | tag | first event |\n|---|---|---|---|---|---|---|"
    );
    for case in CASES {
        let path = dir.join(case.path);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let cfg: ProcessingConfig = toml::from_str(case.config).expect("case config");
        let processing = cfg.resolve(TAG_CAP).expect("case config resolves");
        let Selection::Process { spec, hints } = processing.select(case.path) else {
            failures.push(format!("{}: skipped", case.path));
            continue;
        };
        let (codec, mut reader) =
            decompress::open(Box::new(BufReader::new(&data[..])), &hints).expect("open");
        let mut sink = Collect::default();
        let stats = process(
            &mut reader,
            spec,
            &ObjectContext::new("samples", case.path),
            &mut sink,
        );
        let stats = match stats {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", case.path));
                continue;
            }
        };
        let msgs = sink.messages();
        let first = msgs.first().cloned().unwrap_or_default();
        let shown: String = first.chars().take(60).collect();
        println!(
            "| {} | {} | {} | {} | {}/{} | {} | `{}` |",
            case.path,
            spec.kind.name(),
            codec.name(),
            stats.events,
            stats.skipped_lines,
            stats.skipped_documents,
            sink.tags().first().copied().unwrap_or("-"),
            shown.replace('|', "\\|")
        );
        if stats.events != case.events {
            failures.push(format!(
                "{}: {} events, expected {}",
                case.path, stats.events, case.events
            ));
        }
        if !first.starts_with(case.first) {
            failures.push(format!("{}: first event {shown:?}", case.path));
        }
        for m in &msgs {
            if m.contains('\n') {
                failures.push(format!("{}: raw LF in an event", case.path));
            }
            if m.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(m).is_err() {
                failures.push(format!("{}: invalid JSON event {m:.80}", case.path));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
