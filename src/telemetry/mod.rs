//! The collector's telemetry: every metric declared once here (name, help, labels), one
//! process-wide [`Registry`] holding their series, and the typed events ([`events`]) through
//! which every outcome both logs and counts, so no metric name or help text is written at a
//! call site. [`http::serve`] answers `GET /metrics` with [`render`].
//!
//! Metrics counted by the formats code (processors, notifications) are not declared here.

pub mod events;
pub mod http;

pub use events::*;
pub use http::serve;

pub use sluice_common::telemetry::Metric;
use sluice_common::telemetry::Registry;

/// Every series of the collector, created on first use (labels are inputs, outcomes, …).
static REGISTRY: Registry = Registry::new();

/// Adds `by` to `metric{label_values}`.
fn count(metric: &'static Metric, label_values: &[&str], by: u64) {
    REGISTRY.add(metric, label_values, by as i64);
}

/// The Prometheus text exposition of every series.
pub fn render() -> String {
    REGISTRY.render()
}

/// The current value of `metric{label_values}` (0 when never counted): for tests and
/// summaries.
pub fn value(metric: &Metric, label_values: &[&str]) -> u64 {
    REGISTRY.value(metric, label_values).max(0) as u64
}

// The queue side.

pub static MESSAGES_RECEIVED: Metric = Metric::counter(
    "sluice_messages_received_total",
    "Messages received from SQS",
    &["input"],
);
pub static RECEIVE_ERRORS: Metric = Metric::counter(
    "sluice_receive_errors_total",
    "Failed ReceiveMessage calls",
    &["input"],
);
pub static MESSAGES: Metric = Metric::counter(
    "sluice_messages_total",
    "SQS messages handled, by outcome",
    &["input", "outcome"],
);
pub static MESSAGES_UNDECODABLE: Metric = Metric::counter(
    "sluice_messages_undecodable_total",
    "Messages whose body is no known notification",
    &["input"],
);
pub static MESSAGES_POISON: Metric = Metric::counter(
    "sluice_messages_poison_total",
    "Messages that failed max_receive_count times",
    &["input", "action"],
);
pub static MESSAGES_DELETED: Metric = Metric::counter(
    "sluice_messages_deleted_total",
    "Messages deleted after confirmation",
    &["input"],
);
pub static VISIBILITY_EXTENSIONS: Metric = Metric::counter(
    "sluice_visibility_extensions_total",
    "Heartbeat visibility extensions",
    &["input"],
);
pub static AWS_OPERATIONS: Metric = Metric::counter(
    "sluice_aws_operations_total",
    "AWS API operations started",
    &["service"],
);
pub static AWS_ATTEMPTS: Metric = Metric::counter(
    "sluice_aws_attempts_total",
    "AWS API attempts, the SDK's retries included",
    &["service"],
);

// The object side.

pub static OBJECTS: Metric = Metric::counter(
    "sluice_objects_total",
    "Objects handled, by outcome",
    &["input", "outcome"],
);
pub static OBJECT_BYTES: Metric = Metric::counter(
    "sluice_object_bytes_total",
    "Decompressed bytes read from objects",
    &["input"],
);
pub static EVENTS_SKIPPED_CHECKPOINT: Metric = Metric::counter(
    "sluice_events_skipped_checkpoint_total",
    "Events of a redelivered object not sent again: confirmed by an earlier attempt (ledger checkpoint)",
    &["input"],
);
pub static EVENTS_FROM_FAILED_OBJECTS: Metric = Metric::counter(
    "sluice_events_from_failed_objects_total",
    "Events delivered from objects that then failed part-way (read before the error)",
    &["input"],
);
pub static EVENTS_TRUNCATED: Metric = Metric::counter(
    "sluice_events_truncated_total",
    "Events cut to max_event_bytes",
    &["input"],
);
pub static EVENTS_DROPPED: Metric = Metric::counter(
    "sluice_events_dropped_total",
    "Events dropped for their length",
    &["input"],
);
pub static EVENTS_INVALID_UTF8: Metric = Metric::counter(
    "sluice_events_invalid_utf8_total",
    "Events with bytes that were not UTF-8 (decoded per `encoding`)",
    &["input"],
);
pub static RECORDS_MALFORMED: Metric = Metric::counter(
    "sluice_records_malformed_total",
    "Records skipped or passed through as text: not JSON, nested too deep, or without extract_field",
    &["input"],
);
pub static RECORD_ANOMALIES: Metric = Metric::counter(
    "sluice_record_anomalies_total",
    "Record-level anomalies of delivered objects, by kind (see ObjectStats::anomalies)",
    &["input", "processor", "kind"],
);
pub static EVENTS_NOT_SENT: Metric = Metric::counter(
    "sluice_events_not_sent_total",
    "Events a do_not_send input processed and did not send",
    &["input"],
);

// The delivery side.

pub static BATCHES_CONFIRMED: Metric = Metric::counter(
    "sluice_batches_confirmed_total",
    "Batches the relay confirmed durable",
    &["input"],
);
pub static EVENTS_CONFIRMED: Metric = Metric::counter(
    "sluice_events_confirmed_total",
    "Events in confirmed batches",
    &["input"],
);
pub static BATCH_RETRIES: Metric = Metric::counter(
    "sluice_batch_retries_total",
    "Batch sends retried (relay unreachable or busy)",
    &["input"],
);
pub static BATCH_KEY_COLLISIONS: Metric = Metric::counter(
    "sluice_batch_key_collisions_total",
    "Batches whose key the relay knew for another batch",
    &["input"],
);
pub static BATCHES_REFUSED: Metric = Metric::counter(
    "sluice_batches_refused_total",
    "Batches the relay refused (after any re-split)",
    &["input"],
);
pub static BATCHES_RESPLIT: Metric = Metric::counter(
    "sluice_batches_resplit_total",
    "Batches the relay refused (413, or 400 naming a line) and that were re-split",
    &["input", "status"],
);
pub static RESPLIT_EVENTS: Metric = Metric::counter(
    "sluice_resplit_events_total",
    "Events changed by a re-split: truncated or dropped by the oversize rule, or dropped as the relay named them malformed",
    &["input", "action"],
);

/// Every metric above, for the test that the declarations stay unique and documented.
pub static ALL: &[&Metric] = &[
    &MESSAGES_RECEIVED,
    &RECEIVE_ERRORS,
    &MESSAGES,
    &MESSAGES_UNDECODABLE,
    &MESSAGES_POISON,
    &MESSAGES_DELETED,
    &VISIBILITY_EXTENSIONS,
    &AWS_OPERATIONS,
    &AWS_ATTEMPTS,
    &OBJECTS,
    &OBJECT_BYTES,
    &EVENTS_SKIPPED_CHECKPOINT,
    &EVENTS_FROM_FAILED_OBJECTS,
    &EVENTS_TRUNCATED,
    &EVENTS_DROPPED,
    &EVENTS_INVALID_UTF8,
    &RECORDS_MALFORMED,
    &RECORD_ANOMALIES,
    &EVENTS_NOT_SENT,
    &BATCHES_CONFIRMED,
    &EVENTS_CONFIRMED,
    &BATCH_RETRIES,
    &BATCH_KEY_COLLISIONS,
    &BATCHES_REFUSED,
    &BATCHES_RESPLIT,
    &RESPLIT_EVENTS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_declared_once_with_help() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name declared twice");
        for m in ALL {
            assert!(m.name.starts_with("sluice_") && m.name.ends_with("_total"));
            assert!(!m.help.is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn counts_render_in_the_text_format() {
        count(&OBJECTS, &["t-render", "ok"], 2);
        count(&OBJECTS, &["t-render", "ok"], 1);
        assert_eq!(value(&OBJECTS, &["t-render", "ok"]), 3);
        let text = render();
        assert!(text.contains("# HELP sluice_objects_total Objects handled, by outcome\n# TYPE sluice_objects_total counter\n"), "{text}");
        assert!(
            text.contains("sluice_objects_total{input=\"t-render\",outcome=\"ok\"} 3\n"),
            "{text}"
        );
    }
}
