//! Processor stage: splits a decompressed object into events and tags them.
//!
//! Plain code over a blocking `BufRead`: no AWS, no async, so tests feed it bytes. It hands
//! each event to an [`EventSink`] (the batch stage) and never holds more than one event, so
//! memory is bounded by the event cap whatever the object size (parquet, which needs random
//! access, spills to a capped temporary file instead).
//!
//! Layout:
//! - [`config`]: the per-input configuration keys ([`ProcessingConfig`]) and their validated
//!   form ([`Processing`]), which picks a [`ProcessorSpec`] for each object key (selectors,
//!   include/exclude);
//! - [`tag`]: Devo tags, static or templated from record fields and key captures;
//! - [`charset`]: invalid UTF-8 → replacement characters or latin-1;
//! - `emit`: the last step of every processor (charset, LF escaping, length cap, tag, enrichment);
//! - `json`: a byte-level streaming JSON scanner that slices records without parsing them;
//! - one file per family of processors: `text` (lines, vpc_flow, w3c, elb), `jsonproc` (json,
//!   cloudtrail, json_lines, fdr, extract), `cloudwatch`, `parquet`;
//! - [`multiline`]: the `multiline` option of `lines` (one event per group of lines).
//!
//! It does not fetch, decompress (see [`crate::decompress`]) or batch.

pub mod charset;
mod cloudwatch;
pub mod config;
mod emit;
#[cfg(test)]
mod fixtures;
mod imperva;
#[cfg(test)]
mod invalid_json;
mod json;
mod jsonproc;
pub mod multiline;
mod parquet;
#[cfg(test)]
mod samples;
pub mod tag;
mod text;

use std::io::BufRead;

pub use charset::Encoding;
pub use config::{
    Processing, ProcessingConfig, ProcessingConfigError, ProcessorOptions, Selection,
    SelectorConfig, PROCESSING_KEYS,
};
pub use tag::{TagError, TagTemplate};

/// Default longest event, in bytes (1 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Default cap of the temporary file a parquet object is spilled to (1 GiB).
pub const DEFAULT_MAX_SPILL_BYTES: u64 = 1024 * 1024 * 1024;

/// Where events go. The batch stage implements it.
pub trait EventSink {
    /// Takes one event. `message` holds no LF. An error stops the object.
    fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError>;
}

/// The sink refused more events (the relay refused a batch, or shutdown).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// How an object is split into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorKind {
    /// One event per line.
    Lines,
    /// One JSON value per line, re-emitted compact.
    JsonLines,
    /// Whole JSON documents; a top-level array or the array at `expand_field` is split.
    Json,
    /// CloudTrail log files: `Records` expansion.
    Cloudtrail,
    /// VPC / Transit Gateway flow logs (text, with their header line).
    VpcFlow,
    /// W3C extended logs (CloudFront): `#` comment lines dropped.
    W3c,
    /// ELB / ALB / NLB / S3 server access logs: one event per line.
    Elb,
    /// CloudWatch Logs subscription data delivered by Firehose.
    CloudwatchLogs,
    /// Parquet: each row as a compact JSON object.
    Parquet,
    /// CrowdStrike Falcon Data Replicator data files (JSON lines).
    Fdr,
    /// One field of each JSON record as the event.
    Extract,
}

impl ProcessorKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [ProcessorKind; 11] = [
        ProcessorKind::Lines,
        ProcessorKind::JsonLines,
        ProcessorKind::Json,
        ProcessorKind::Cloudtrail,
        ProcessorKind::VpcFlow,
        ProcessorKind::W3c,
        ProcessorKind::Elb,
        ProcessorKind::CloudwatchLogs,
        ProcessorKind::Parquet,
        ProcessorKind::Fdr,
        ProcessorKind::Extract,
    ];

    /// Parses a config name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            ProcessorKind::Lines => "lines",
            ProcessorKind::JsonLines => "json_lines",
            ProcessorKind::Json => "json",
            ProcessorKind::Cloudtrail => "cloudtrail",
            ProcessorKind::VpcFlow => "vpc_flow",
            ProcessorKind::W3c => "w3c",
            ProcessorKind::Elb => "elb",
            ProcessorKind::CloudwatchLogs => "cloudwatch_logs",
            ProcessorKind::Parquet => "parquet",
            ProcessorKind::Fdr => "fdr",
            ProcessorKind::Extract => "extract",
        }
    }
}

/// What to do with an event over the length cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Keep the first `max_event_bytes` bytes (cut on a character boundary).
    #[default]
    Truncate,
    /// Drop the event (counted).
    Drop,
}

/// What to do with a JSON record that is not valid JSON (RFC 8259), in every JSON-based
/// processor (crates/formats/docs/formats.md, "Invalid JSON").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidJson {
    /// Drop the record (counted in `invalid_json`; the object goes on). The default: nothing
    /// that does not parse reaches the SIEM, and one bad record does not hold back the rest.
    #[default]
    Drop,
    /// Pass the record's bytes on as a text event (counted in `invalid_json`).
    Raw,
    /// Fail the object with an error naming the byte offset (the message is retried, then
    /// poison).
    Fail,
}

/// A resolved processing configuration for one object: built by [`Processing::select`] (or
/// [`ProcessorSpec::new`] in tests and tools), never by hand from raw config.
#[derive(Debug, Clone)]
pub struct ProcessorSpec {
    /// The splitter.
    pub kind: ProcessorKind,
    /// The Devo tag of the events; `None` uses the processor's default (see [`tag::default_tag`]).
    pub tag: Option<TagTemplate>,
    /// Longest tag the receiver accepts: a tag rendered from record fields that comes out
    /// longer is cut to it (set by [`ProcessingConfig::resolve`]; no cut in
    /// [`ProcessorSpec::new`]).
    pub max_tag_bytes: usize,
    /// Longest event, in bytes.
    pub max_event_bytes: usize,
    /// What happens to longer events.
    pub oversize: Oversize,
    /// What invalid UTF-8 becomes.
    pub encoding: Encoding,
    /// What happens to records that are not valid JSON (JSON-based processors).
    pub invalid_json: InvalidJson,
    /// Lines skipped at the top of each object (`lines`, `elb`, `w3c`, `vpc_flow`).
    pub skip_header_lines: usize,
    /// Field (a name or a dotted path) whose array is split into events (`json`, `extract`;
    /// `cloudtrail` defaults to `Records`).
    pub expand_field: Option<String>,
    /// Dotted path of the field that becomes the event (`extract`).
    pub extract_field: Option<String>,
    /// `vpc_flow`: emit each record as a JSON object keyed by the header's field names.
    pub vpc_flow_json: bool,
    /// `w3c`: emit each record as a JSON object keyed by the `#Fields` names.
    pub w3c_json: bool,
    /// `cloudwatch_logs`: emit only each log event's `message` text.
    pub cloudwatch_message_only: bool,
    /// `cloudtrail`: process digest files (`CloudTrail-Digest/`) instead of skipping them.
    pub include_digests: bool,
    /// Largest parquet object spilled to a temporary file, in bytes.
    pub max_spill_bytes: u64,
    /// JSON events get the object's metadata (bucket, key, SQS facts) under this field.
    pub enrich_field: Option<String>,
    /// The selector's key regex, whose named captures fill tag templates.
    pub key_pattern: Option<regex::Regex>,
    /// `lines` / `elb`: join lines into one event (Filebeat's multiline).
    pub multiline: Option<multiline::Multiline>,
}

impl ProcessorSpec {
    /// A spec with every option at its default.
    pub fn new(kind: ProcessorKind) -> Self {
        ProcessorSpec {
            kind,
            tag: None,
            max_tag_bytes: usize::MAX,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            oversize: Oversize::Truncate,
            encoding: Encoding::Utf8,
            invalid_json: InvalidJson::Drop,
            skip_header_lines: 0,
            expand_field: None,
            extract_field: None,
            vpc_flow_json: false,
            w3c_json: false,
            cloudwatch_message_only: false,
            include_digests: false,
            max_spill_bytes: DEFAULT_MAX_SPILL_BYTES,
            enrich_field: None,
            key_pattern: None,
            multiline: None,
        }
    }

    /// Sets a static or templated tag (panics on an invalid template: for tests and tools).
    pub fn with_tag(mut self, tag: &str) -> Self {
        self.tag = Some(TagTemplate::parse(tag).expect("valid tag template"));
        self
    }
}

/// Facts about the object being processed, for tags, enrichment and errors.
#[derive(Debug, Clone, Copy)]
pub struct ObjectContext<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// SQS message id of the notification, when known.
    pub message_id: Option<&'a str>,
    /// SQS `SentTimestamp` attribute (epoch milliseconds), when known.
    pub sent_timestamp_ms: Option<u64>,
    /// SQS `ApproximateReceiveCount`, when known.
    pub receive_count: Option<u32>,
}

impl<'a> ObjectContext<'a> {
    /// A context with only bucket and key.
    pub fn new(bucket: &'a str, key: &'a str) -> Self {
        ObjectContext {
            bucket,
            key,
            message_id: None,
            sent_timestamp_ms: None,
            receive_count: None,
        }
    }

    /// Adds the SQS facts used by metadata enrichment (`enrich_field`).
    pub fn with_message(
        mut self,
        message_id: Option<&'a str>,
        sent_timestamp_ms: Option<u64>,
        receive_count: Option<u32>,
    ) -> Self {
        self.message_id = message_id;
        self.sent_timestamp_ms = sent_timestamp_ms;
        self.receive_count = receive_count;
        self
    }
}

/// What processing one object produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Events emitted.
    pub events: u64,
    /// Decompressed bytes read.
    pub bytes_in: u64,
    /// Events cut to the length cap.
    pub truncated: u64,
    /// Events dropped for their length.
    pub dropped: u64,
    /// Events that held invalid UTF-8 (fixed per `encoding`, never dropped).
    pub invalid_utf8: u64,
    /// Events whose embedded LF/CR were escaped as `\n`/`\r`.
    pub escaped_newlines: u64,
    /// Header and comment lines skipped (`skip_header_lines`, VPC header, `#` lines).
    pub skipped_lines: u64,
    /// Documents skipped as a whole (CloudWatch Logs `CONTROL_MESSAGE`).
    pub skipped_documents: u64,
    /// JSON records without the `extract_field` (skipped), or nested deeper than 128 levels
    /// (skipped).
    pub malformed_records: u64,
    /// `multiline`: lines left out of an event, whole or in part, because the event reached
    /// `max_lines` or `max_bytes` (the rest of such a group is dropped, as Filebeat does).
    pub multiline_cut_lines: u64,
    /// JSON records (a `json_lines` line, an array element, a document, a log event) that were
    /// not valid JSON (RFC 8259): dropped, or passed on as text under `invalid_json = "raw"`
    /// (under `"fail"` the object fails instead, and nothing is counted).
    pub invalid_json: u64,
}

impl ObjectStats {
    /// Every record-level anomaly this object showed, as `(kind, count)`: the one mapping
    /// from these fields to the `kind` label of `sluice_record_anomalies_total`, so a new
    /// anomaly field needs one line here (the destructuring below fails to compile until the
    /// field is listed, either here or as not an anomaly).
    pub fn anomalies(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let ObjectStats {
            // Not anomalies: volumes, and header lines a format is expected to have.
            events: _,
            bytes_in: _,
            skipped_lines: _,
            truncated,
            dropped,
            invalid_utf8,
            escaped_newlines,
            skipped_documents,
            malformed_records,
            multiline_cut_lines,
            invalid_json,
        } = *self;
        [
            ("truncated", truncated),
            ("dropped_oversize", dropped),
            ("invalid_utf8", invalid_utf8),
            ("escaped_newlines", escaped_newlines),
            ("skipped_documents", skipped_documents),
            ("malformed_records", malformed_records),
            ("multiline_cut_lines", multiline_cut_lines),
            ("invalid_json", invalid_json),
        ]
        .into_iter()
    }
}

/// Why an object could not be processed to its end. Offsets count decompressed bytes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading at byte {offset} of the decompressed object: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped at byte {offset}: {source}")]
    Sink {
        offset: u64,
        #[source]
        source: SinkError,
    },
    #[error("invalid JSON at byte {offset}: {reason}")]
    Json { offset: u64, reason: &'static str },
    #[error("not a parquet file: starts with {found:02x?} at byte 0, expected \"PAR1\"")]
    NotParquet { found: Vec<u8> },
    #[error("parquet object larger than max_spill_bytes ({limit} bytes)")]
    SpillTooLarge { limit: u64 },
    #[error("spilling the parquet object to a temporary file (at byte {offset}): {source}")]
    Spill {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid parquet file of {size} bytes: {message}")]
    Parquet { size: u64, message: String },
    #[error("invalid envelope at byte {offset}: {reason}")]
    Envelope { offset: u64, reason: &'static str },
}

/// Splits `input` into events for `sink` as `spec` says.
///
/// Some inputs are recognised by their first bytes whatever `spec.kind` says: parquet (`PAR1`),
/// which no text processor can read; the Imperva log-file envelope (`accountId:` header up to
/// `|==|`, then a zlib or plain payload), whose header is skipped and payload inflated before the
/// processor runs (error offsets are then counted from the start of the payload); and a gzip
/// stream left inside the decompressed one (double gzip), inflated once more.
pub fn process(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    ctx: &ObjectContext<'_>,
    sink: &mut dyn EventSink,
) -> Result<ObjectStats, ProcessError> {
    let (result, stats) = process_counted(input, spec, ctx, sink);
    result.map(|()| stats)
}

/// As [`process`], and the counts so far also when it fails: the anomalies met before an
/// error are counted like those of an object read to its end.
pub fn process_counted(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    ctx: &ObjectContext<'_>,
    sink: &mut dyn EventSink,
) -> (Result<(), ProcessError>, ObjectStats) {
    let mut out = emit::Emitter::new(spec, ctx, sink);
    let result = run_object(input, spec, &mut out);
    (result, out.finish())
}

/// The imperva header (when there is one), then the processor over the rest.
fn run_object(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut emit::Emitter<'_>,
) -> Result<(), ProcessError> {
    let head = input
        .fill_buf()
        .map_err(|source| ProcessError::Read { offset: 0, source })?;
    if head.starts_with(imperva::MAGIC) {
        let header = imperva::skip_header(input)?;
        out.stats.skipped_lines += header.lines;
        if header.zlib {
            let mut payload = std::io::BufReader::with_capacity(
                64 * 1024,
                flate2::bufread::ZlibDecoder::new(&mut *input),
            );
            run(&mut payload, spec, out, false)?;
        } else {
            run(input, spec, out, false)?;
        }
        out.stats.bytes_in += header.bytes;
    } else {
        run(input, spec, out, false)?;
    }
    Ok(())
}

/// Runs the processor `spec` names (or parquet, by magic; `nested` after one inner gzip layer
/// was removed).
fn run(
    input: &mut dyn BufRead,
    spec: &ProcessorSpec,
    out: &mut emit::Emitter<'_>,
    nested: bool,
) -> Result<(), ProcessError> {
    let head = input
        .fill_buf()
        .map_err(|source| ProcessError::Read { offset: 0, source })?;
    if head.starts_with(&[0x1f, 0x8b]) && !nested {
        // A second gzip layer (Firehose compressing CloudWatch Logs' own gzip records): no text
        // starts with these bytes, so take one more layer off.
        let mut inner = std::io::BufReader::with_capacity(
            64 * 1024,
            flate2::bufread::MultiGzDecoder::new(&mut *input),
        );
        return run(&mut inner, spec, out, true);
    }
    let kind = if head.starts_with(parquet::MAGIC) {
        ProcessorKind::Parquet
    } else {
        spec.kind
    };
    match kind {
        ProcessorKind::Lines | ProcessorKind::Elb => text::lines(input, spec, out),
        ProcessorKind::VpcFlow => text::vpc_flow(input, spec, out),
        ProcessorKind::W3c => text::w3c(input, spec, out),
        ProcessorKind::JsonLines | ProcessorKind::Fdr => jsonproc::json_lines(input, spec, out),
        ProcessorKind::Json | ProcessorKind::Cloudtrail | ProcessorKind::Extract => {
            jsonproc::documents(input, spec, out)
        }
        ProcessorKind::CloudwatchLogs => cloudwatch::process(input, spec, out),
        ProcessorKind::Parquet => parquet::process(input, spec, out),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A collecting sink and helpers shared by the processor tests.
    use super::*;

    /// The tag cap the tests give [`ProcessingConfig::resolve`]: the relay's cap today (the
    /// collector passes the relay's own constant).
    pub const TAG_CAP: usize = 256;

    /// Collects every event.
    #[derive(Default)]
    pub struct Collect(pub Vec<(String, Vec<u8>)>);

    impl EventSink for Collect {
        fn emit(&mut self, tag: &str, message: &[u8]) -> Result<(), SinkError> {
            self.0.push((tag.to_string(), message.to_vec()));
            Ok(())
        }
    }

    impl Collect {
        /// The messages as strings.
        pub fn messages(&self) -> Vec<String> {
            self.0
                .iter()
                .map(|(_, m)| String::from_utf8(m.clone()).expect("sink gets UTF-8"))
                .collect()
        }
        /// The tags.
        pub fn tags(&self) -> Vec<&str> {
            self.0.iter().map(|(t, _)| t.as_str()).collect()
        }
    }

    /// Runs `spec` over `data` for the key `key`.
    pub fn run_key(
        data: &[u8],
        spec: &ProcessorSpec,
        key: &str,
    ) -> (Result<ObjectStats, ProcessError>, Collect) {
        let mut sink = Collect::default();
        // A small buffer so that values cross buffer boundaries in every test (16 bytes: room
        // for the longest magic sniffed, Imperva's `accountId:`).
        let mut input = std::io::BufReader::with_capacity(16, data);
        let r = process(&mut input, spec, &ObjectContext::new("b", key), &mut sink);
        (r, sink)
    }

    /// Runs `spec` over `data`, expecting success.
    pub fn run(data: &[u8], spec: &ProcessorSpec) -> (ObjectStats, Vec<String>) {
        let (r, sink) = run_key(data, spec, "k");
        (r.expect("processing succeeds"), sink.messages())
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn a_failing_object_still_reports_what_it_counted() {
        // A bad record dropped (counted), a good one emitted, then an array that never ends.
        let spec = ProcessorSpec::new(ProcessorKind::Json);
        let mut sink = Collect::default();
        let mut input = &br#"[{"a":tru},{"b":1},"#[..];
        let (result, stats) =
            process_counted(&mut input, &spec, &ObjectContext::new("b", "k"), &mut sink);
        assert!(result.is_err());
        assert_eq!((stats.events, stats.invalid_json), (1, 1));
        assert_eq!(sink.messages(), [r#"{"b":1}"#]);
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in ProcessorKind::ALL {
            assert_eq!(ProcessorKind::parse(k.name()), Some(k));
        }
        assert_eq!(ProcessorKind::parse("nope"), None);
    }

    #[test]
    fn double_gzip_is_inflated_once_more() {
        use std::io::Write;
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut inner =
            gz(b"{\"messageType\":\"DATA_MESSAGE\",\"logEvents\":[{\"message\":\"a\"}]}");
        inner.extend(gz(
            b"{\"messageType\":\"DATA_MESSAGE\",\"logEvents\":[{\"message\":\"b\"}]}",
        ));
        let mut spec = ProcessorSpec::new(ProcessorKind::CloudwatchLogs);
        spec.cloudwatch_message_only = true;
        let (stats, msgs) = testutil::run(&inner, &spec);
        assert_eq!(msgs, vec!["a", "b"]);
        assert_eq!(stats.events, 2);
    }

    #[test]
    fn every_anomaly_field_has_its_own_kind() {
        // Distinct powers of two (volumes stay 0): a field missing from `anomalies()`, or listed twice, or
        // two fields under one kind, changes the sum or the kinds.
        let stats = ObjectStats {
            truncated: 1,
            dropped: 2,
            invalid_utf8: 4,
            escaped_newlines: 8,
            skipped_documents: 16,
            malformed_records: 32,
            // A field added later is covered by the destructuring in `anomalies()`.
            ..ObjectStats::default()
        };
        let listed: Vec<_> = stats.anomalies().collect();
        assert_eq!(listed.iter().map(|(_, n)| n).sum::<u64>(), 63, "{listed:?}");
        let mut kinds: Vec<_> = listed.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), listed.len(), "a kind listed twice: {listed:?}");
        assert!(ObjectStats::default().anomalies().all(|(_, n)| n == 0));
    }

    #[test]
    fn parquet_magic_overrides_the_kind() {
        let (r, _) = run_key(
            b"PAR1garbage",
            &ProcessorSpec::new(ProcessorKind::Lines),
            "k",
        );
        assert!(matches!(r, Err(ProcessError::Parquet { .. })), "{r:?}");
    }
}
