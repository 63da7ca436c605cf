//! Per-input processing configuration: the raw serde layer ([`ProcessingConfig`], flattened into
//! each `[[inputs]]` table by the lead's config) and its validated form ([`Processing`]), which
//! decides for every object key whether to process it and how ([`Processing::select`]).
//!
//! Selection order for a key: the default excludes (`_SUCCESS`, `ELBAccessLogTestFile`,
//! `ConfigWritabilityCheckFile`) and the input's `exclude` regexes skip it; a non-empty `include`
//! list skips every key that none of its regexes matches; then the first `[[inputs.selectors]]`
//! whose `key` regex matches gives the options (each option it leaves out comes from the input
//! table), else the input table's options apply; finally a `cloudtrail` processor skips
//! `CloudTrail-Digest/` keys unless `include_digests` is set.
//!
//! It does not read objects; see the sibling processor modules.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use super::tag::TagTemplate;
use super::{
    Encoding, InvalidJson, Oversize, ProcessorKind, ProcessorSpec, DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_SPILL_BYTES,
};
use crate::decompress::Hints;

/// Largest accepted `max_event_bytes` (64 MiB): an event is held in memory whole.
pub const MAX_MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// Keys skipped in every input: services' test and marker objects.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    r"(^|/)_SUCCESS$",
    r"(^|/)ELBAccessLogTestFile$",
    r"(^|/)ConfigWritabilityCheckFile$",
];

/// Every key [`ProcessingConfig`] accepts (flattened into an `[[inputs]]` table): the fields of
/// [`ProcessorOptions`], then its own. A const, so the collector can check the keys of an input
/// table before it deserializes it; the test `processing_keys_are_the_fields_serde_reads` checks
/// it against what serde reads.
pub const PROCESSING_KEYS: &[&str] = &[
    "processor",
    "tag",
    "skip_header_lines",
    "expand_field",
    "extract_field",
    "encoding",
    "max_event_bytes",
    "oversize",
    "invalid_json",
    "compressed_events",
    "vpc_flow_json",
    "w3c_json",
    "cloudwatch_message_only",
    "include_digests",
    "max_spill_bytes",
    "enrich_field",
    "multiline",
    "include",
    "exclude",
    "selectors",
];

/// Options that an input table and each of its selectors can set. Every one is optional: a
/// selector inherits what it leaves out from its input, an input falls back to the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessorOptions {
    /// Splitter: `lines` (default), `json_lines`, `json`, `cloudtrail`, `vpc_flow`, `w3c`, `elb`,
    /// `cloudwatch_logs`, `parquet`, `fdr`, `extract`.
    pub processor: Option<ProcessorKind>,
    /// Devo tag, static or a template (`{field}`, `{field|fallback}`, `{capture}`); default: the
    /// processor's own tag (crates/formats/docs/formats.md).
    pub tag: Option<String>,
    /// Lines skipped at the top of each object (text processors). Default 0.
    pub skip_header_lines: Option<usize>,
    /// Field whose array becomes one event per element (`json`, `extract`; `cloudtrail` uses
    /// `Records`): a name or a dotted path into nested objects (`data.items`).
    pub expand_field: Option<String>,
    /// Dotted path of the field that becomes the event (`extract`, required there).
    pub extract_field: Option<String>,
    /// `utf8` (invalid bytes replaced, default) or `latin1` (invalid bytes read as latin-1).
    pub encoding: Option<Encoding>,
    /// Longest event in bytes (default 1 MiB).
    pub max_event_bytes: Option<usize>,
    /// `truncate` (default) or `drop` events over `max_event_bytes`.
    pub oversize: Option<Oversize>,
    /// `drop` (default), `raw` or `fail` JSON records that are not valid JSON.
    pub invalid_json: Option<InvalidJson>,
    /// The Devo parameter: objects are gzip whatever their first bytes say.
    pub compressed_events: Option<bool>,
    /// `vpc_flow`: each record as a JSON object keyed by the header's field names.
    pub vpc_flow_json: Option<bool>,
    /// `w3c`: each record as a JSON object keyed by the `#Fields` names.
    pub w3c_json: Option<bool>,
    /// `cloudwatch_logs`: the event is the log event's `message` alone (default: the log event
    /// with `logGroup`, `logStream` and `owner` added).
    pub cloudwatch_message_only: Option<bool>,
    /// `cloudtrail`: process `CloudTrail-Digest/` files (one event each) instead of skipping them.
    pub include_digests: Option<bool>,
    /// Largest parquet object spilled to a temporary file, in bytes (default 1 GiB).
    pub max_spill_bytes: Option<u64>,
    /// Off by default. JSON object events get `"<enrich_field>":{"bucket":..,"key":..,
    /// "sqs_message_id":..,"sqs_sent_timestamp":..,"sqs_receive_count":..}` appended.
    pub enrich_field: Option<String>,
    /// `lines` / `elb`: `{ pattern, negate, match, max_lines, max_bytes }`, joins lines into one
    /// event (crates/formats/docs/formats.md, "Multiline"). A selector's table replaces the
    /// input's whole.
    pub multiline: Option<super::multiline::MultilineConfig>,
}

impl ProcessorOptions {
    /// `self` where set, else `base`.
    fn or(&self, base: &ProcessorOptions) -> ProcessorOptions {
        ProcessorOptions {
            processor: self.processor.or(base.processor),
            tag: self.tag.clone().or_else(|| base.tag.clone()),
            skip_header_lines: self.skip_header_lines.or(base.skip_header_lines),
            expand_field: self
                .expand_field
                .clone()
                .or_else(|| base.expand_field.clone()),
            extract_field: self
                .extract_field
                .clone()
                .or_else(|| base.extract_field.clone()),
            encoding: self.encoding.or(base.encoding),
            max_event_bytes: self.max_event_bytes.or(base.max_event_bytes),
            oversize: self.oversize.or(base.oversize),
            invalid_json: self.invalid_json.or(base.invalid_json),
            compressed_events: self.compressed_events.or(base.compressed_events),
            vpc_flow_json: self.vpc_flow_json.or(base.vpc_flow_json),
            w3c_json: self.w3c_json.or(base.w3c_json),
            cloudwatch_message_only: self
                .cloudwatch_message_only
                .or(base.cloudwatch_message_only),
            include_digests: self.include_digests.or(base.include_digests),
            max_spill_bytes: self.max_spill_bytes.or(base.max_spill_bytes),
            enrich_field: self
                .enrich_field
                .clone()
                .or_else(|| base.enrich_field.clone()),
            multiline: self.multiline.clone().or_else(|| base.multiline.clone()),
        }
    }
}

/// One `[[inputs.selectors]]` table: a key regex and the options for the keys it matches.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SelectorConfig {
    /// Regex searched in the object key (unanchored); its named groups fill tag templates.
    pub key: String,
    /// The options of the matching keys.
    #[serde(flatten)]
    pub options: ProcessorOptions,
    /// Keys the options do not know, reported by `resolve`.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// Every per-input processing key, flat in the `[[inputs]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessingConfig {
    /// The input's own options (used when no selector matches, inherited by selectors).
    #[serde(flatten)]
    pub options: ProcessorOptions,
    /// Key regexes: when non-empty, only keys matching one of them are processed.
    pub include: Vec<String>,
    /// Key regexes: matching keys are skipped (added to [`DEFAULT_EXCLUDES`]).
    pub exclude: Vec<String>,
    /// Ordered per-key-pattern options; the first match wins.
    pub selectors: Vec<SelectorConfig>,
}

/// Why a processing configuration is invalid. `at` names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingConfigError {
    #[error("{at}: invalid regex: {source}")]
    Regex {
        at: String,
        #[source]
        source: regex::Error,
    },
    #[error("{at}: {source}")]
    Tag {
        at: String,
        #[source]
        source: super::TagError,
    },
    #[error("{at}: {reason}")]
    Invalid { at: String, reason: String },
}

/// What to do with one object key.
#[derive(Debug)]
pub enum Selection<'a> {
    /// Not processed (delete the notification as done for this object).
    Skip { reason: String },
    /// Decompress with `hints` (the caller adds `content_encoding`) and process with `spec`.
    Process {
        spec: &'a ProcessorSpec,
        hints: Hints,
    },
}

/// A resolved spec and its decompression hints.
#[derive(Debug, Clone)]
struct Resolved {
    spec: ProcessorSpec,
    force_gzip: bool,
}

/// Validated processing configuration of one input. Cheap to share (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Processing {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    selectors: Vec<(Regex, Resolved)>,
    default: Resolved,
}

impl ProcessingConfig {
    /// Validates everything and compiles regexes and tag templates. `max_tag_bytes` is the
    /// longest tag the receiver accepts (the relay's cap, which this crate does not know):
    /// every spec cuts its tags rendered from record fields to it.
    pub fn resolve(&self, max_tag_bytes: usize) -> Result<Processing, ProcessingConfigError> {
        let compile = |at: String, re: &str| {
            Regex::new(re).map_err(|source| ProcessingConfigError::Regex { at, source })
        };
        let include = self
            .include
            .iter()
            .enumerate()
            .map(|(i, re)| compile(format!("include[{i}]"), re))
            .collect::<Result<Vec<_>, _>>()?;
        let mut exclude = DEFAULT_EXCLUDES
            .iter()
            .map(|re| compile("default excludes".into(), re))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, re) in self.exclude.iter().enumerate() {
            exclude.push(compile(format!("exclude[{i}]"), re)?);
        }
        let default = resolve_options(&self.options, None, max_tag_bytes, "input")?;
        let mut selectors = Vec::with_capacity(self.selectors.len());
        for (i, sel) in self.selectors.iter().enumerate() {
            let at = format!("selectors[{i}]");
            if let Some(name) = sel.unknown.keys().next() {
                return Err(ProcessingConfigError::Invalid {
                    at,
                    reason: format!("unknown key {name:?}"),
                });
            }
            let re = compile(format!("{at}.key"), &sel.key)?;
            let resolved = resolve_options(
                &sel.options.or(&self.options),
                Some(&re),
                max_tag_bytes,
                &at,
            )?;
            selectors.push((re, resolved));
        }
        Ok(Processing {
            include,
            exclude,
            selectors,
            default,
        })
    }
}

fn invalid(at: &str, reason: impl Into<String>) -> ProcessingConfigError {
    ProcessingConfigError::Invalid {
        at: at.to_string(),
        reason: reason.into(),
    }
}

/// Turns merged options into a spec, checking ranges and requirements.
fn resolve_options(
    o: &ProcessorOptions,
    key_pattern: Option<&Regex>,
    max_tag_bytes: usize,
    at: &str,
) -> Result<Resolved, ProcessingConfigError> {
    let kind = o.processor.unwrap_or(ProcessorKind::Lines);
    let mut spec = ProcessorSpec::new(kind);
    spec.max_tag_bytes = max_tag_bytes;
    if let Some(tag) = &o.tag {
        spec.tag = Some(
            TagTemplate::parse(tag).map_err(|source| ProcessingConfigError::Tag {
                at: format!("{at}.tag"),
                source,
            })?,
        );
    }
    spec.max_event_bytes = o.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES);
    if !(1..=MAX_MAX_EVENT_BYTES).contains(&spec.max_event_bytes) {
        return Err(invalid(
            &format!("{at}.max_event_bytes"),
            format!(
                "{} is outside 1..={MAX_MAX_EVENT_BYTES}",
                spec.max_event_bytes
            ),
        ));
    }
    spec.oversize = o.oversize.unwrap_or_default();
    spec.invalid_json = o.invalid_json.unwrap_or_default();
    spec.encoding = o.encoding.unwrap_or_default();
    spec.skip_header_lines = o.skip_header_lines.unwrap_or(0);
    spec.expand_field = o.expand_field.clone().filter(|f| !f.is_empty());
    if kind == ProcessorKind::Cloudtrail && spec.expand_field.is_none() {
        spec.expand_field = Some("Records".into());
    }
    spec.extract_field = o.extract_field.clone().filter(|f| !f.is_empty());
    if kind == ProcessorKind::Extract && spec.extract_field.is_none() {
        return Err(invalid(
            &format!("{at}.extract_field"),
            "the extract processor needs extract_field",
        ));
    }
    spec.vpc_flow_json = o.vpc_flow_json.unwrap_or(false);
    spec.w3c_json = o.w3c_json.unwrap_or(false);
    spec.cloudwatch_message_only = o.cloudwatch_message_only.unwrap_or(false);
    spec.include_digests = o.include_digests.unwrap_or(false);
    spec.max_spill_bytes = o.max_spill_bytes.unwrap_or(DEFAULT_MAX_SPILL_BYTES);
    if spec.max_spill_bytes == 0 {
        return Err(invalid(&format!("{at}.max_spill_bytes"), "must be > 0"));
    }
    if let Some(field) = &o.enrich_field {
        if field.is_empty() || field.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return Err(invalid(
                &format!("{at}.enrich_field"),
                "must be a non-empty name without quotes, backslashes or control characters",
            ));
        }
        spec.enrich_field = Some(field.clone());
    }
    if let Some(ml) = &o.multiline {
        let at = format!("{at}.multiline");
        if !matches!(kind, ProcessorKind::Lines | ProcessorKind::Elb) {
            return Err(invalid(&at, "only the lines and elb processors join lines"));
        }
        spec.multiline = Some(
            ml.resolve(MAX_MAX_EVENT_BYTES)
                .map_err(|r| invalid(&at, r))?,
        );
    }
    spec.key_pattern = key_pattern.cloned();
    Ok(Resolved {
        spec,
        force_gzip: o.compressed_events.unwrap_or(false),
    })
}

impl Processing {
    /// Every resolved spec with the key prefix that names it (`` for the input table,
    /// `selectors[i].` for a selector).
    fn specs_mut(&mut self) -> impl Iterator<Item = (String, &mut ProcessorSpec)> {
        std::iter::once((String::new(), &mut self.default.spec)).chain(
            self.selectors
                .iter_mut()
                .enumerate()
                .map(|(i, (_, r))| (format!("selectors[{i}]."), &mut r.spec)),
        )
    }

    /// Lowers every `max_event_bytes` (the input's and its selectors') above `cap` to it, so
    /// no event outgrows what the relay accepts: over-long events then meet the `oversize`
    /// rule at the relay's cap. Returns each lowered key (`max_event_bytes`,
    /// `selectors[0].max_event_bytes`) with its former value.
    pub fn clamp_max_event_bytes(&mut self, cap: usize) -> Vec<(String, usize)> {
        let mut lowered = Vec::new();
        for (at, spec) in self.specs_mut() {
            if spec.max_event_bytes > cap {
                lowered.push((format!("{at}max_event_bytes"), spec.max_event_bytes));
                spec.max_event_bytes = cap;
            }
        }
        lowered
    }

    /// The first static `tag` longer than `max` bytes, with its key (`tag`,
    /// `selectors[1].tag`): no event under it could ever be accepted, and a tag cannot be cut
    /// without sending events to another table. (Templated tags are cut when rendered.)
    pub fn static_tag_over(&self, max: usize) -> Option<(String, usize)> {
        std::iter::once(("tag".to_string(), &self.default.spec))
            .chain(
                self.selectors
                    .iter()
                    .enumerate()
                    .map(|(i, (_, r))| (format!("selectors[{i}].tag"), &r.spec)),
            )
            .find_map(|(at, spec)| {
                let tag = spec.tag.as_ref()?;
                (tag.field_names().next().is_none() && tag.as_str().len() > max)
                    .then(|| (at, tag.as_str().len()))
            })
    }

    /// Decides what to do with the object at `key`.
    pub fn select(&self, key: &str) -> Selection<'_> {
        if let Some(re) = self.exclude.iter().find(|re| re.is_match(key)) {
            return Selection::Skip {
                reason: format!("key matches exclude {:?}", re.as_str()),
            };
        }
        if !self.include.is_empty() && !self.include.iter().any(|re| re.is_match(key)) {
            return Selection::Skip {
                reason: "key matches no include".into(),
            };
        }
        let resolved = self
            .selectors
            .iter()
            .find(|(re, _)| re.is_match(key))
            .map(|(_, r)| r)
            .unwrap_or(&self.default);
        let spec = &resolved.spec;
        if spec.kind == ProcessorKind::Cloudtrail
            && !spec.include_digests
            && key.contains("CloudTrail-Digest/")
        {
            return Selection::Skip {
                reason: "CloudTrail digest file (set include_digests to process it)".into(),
            };
        }
        Selection::Process {
            spec,
            hints: Hints {
                force_gzip: resolved.force_gzip,
                ..Hints::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{run_key, TAG_CAP};
    use super::*;

    fn parse(toml_text: &str) -> ProcessingConfig {
        toml::from_str(toml_text).expect("valid toml")
    }

    fn kind_of(p: &Processing, key: &str) -> Option<ProcessorKind> {
        match p.select(key) {
            Selection::Process { spec, .. } => Some(spec.kind),
            Selection::Skip { .. } => None,
        }
    }

    #[test]
    fn processing_keys_match_the_struct() {
        // Every listed key deserializes; a full table with all of them parses.
        let cfg = parse(
            r#"
            processor = "elb"
            tag = "my.app.x.y"
            skip_header_lines = 1
            expand_field = "Records"
            extract_field = "a.b"
            encoding = "latin1"
            max_event_bytes = 1000
            oversize = "drop"
            invalid_json = "fail"
            compressed_events = true
            vpc_flow_json = true
            w3c_json = true
            cloudwatch_message_only = true
            include_digests = true
            max_spill_bytes = 10
            enrich_field = "meta"
            multiline = { pattern = '^\[', match = "after" }
            include = ["a"]
            exclude = ["b"]
            [[selectors]]
            key = "c"
            "#,
        );
        let p = cfg.resolve(TAG_CAP).unwrap();
        let Selection::Process { spec, hints } = p.select("a") else {
            panic!("skipped")
        };
        assert_eq!(spec.kind, ProcessorKind::Elb);
        assert!(spec.multiline.is_some());
        assert_eq!(spec.max_event_bytes, 1000);
        assert_eq!(spec.oversize, Oversize::Drop);
        assert_eq!(spec.invalid_json, InvalidJson::Fail);
        assert_eq!(spec.encoding, Encoding::Latin1);
        assert!(hints.force_gzip);
        assert_eq!(spec.enrich_field.as_deref(), Some("meta"));
    }

    #[test]
    fn processing_keys_are_the_fields_serde_reads() {
        // `ProcessingConfig` flattens the options, so serde gives no field list for it: its own
        // fields are named here, and this exhaustive pattern stops compiling when one is added.
        let ProcessingConfig {
            options: _,
            include: _,
            exclude: _,
            selectors: _,
        } = ProcessingConfig::default();
        let mut expected = sluice_common::config::field_names::<ProcessorOptions>().to_vec();
        assert!(
            !expected.is_empty(),
            "ProcessorOptions must not flatten (serde lists no fields)"
        );
        expected.extend(["include", "exclude", "selectors"]);
        assert_eq!(PROCESSING_KEYS, expected);
    }

    #[test]
    fn defaults() {
        let p = ProcessingConfig::default().resolve(TAG_CAP).unwrap();
        let Selection::Process { spec, hints } = p.select("x/y.log") else {
            panic!("skipped")
        };
        assert_eq!(spec.kind, ProcessorKind::Lines);
        assert_eq!(spec.max_event_bytes, DEFAULT_MAX_EVENT_BYTES);
        assert_eq!(spec.oversize, Oversize::Truncate);
        assert_eq!(spec.invalid_json, InvalidJson::Drop);
        assert!(!hints.force_gzip);
        for key in [
            "a/_SUCCESS",
            "_SUCCESS",
            "AWSLogs/1/ELBAccessLogTestFile",
            "AWSLogs/1/Config/ConfigWritabilityCheckFile",
        ] {
            assert!(matches!(p.select(key), Selection::Skip { .. }), "{key}");
        }
        assert!(kind_of(&p, "a/_SUCCESS.log").is_some());
    }

    #[test]
    fn selectors_first_match_wins_and_inherit() {
        let cfg = parse(
            r#"
            max_event_bytes = 500
            exclude = ['\.tmp$']
            [[selectors]]
            key = '/CloudTrail/'
            processor = "cloudtrail"
            tag = "cloud.aws.cloudtrail.events.{account}"
            [[selectors]]
            key = 'vpcflowlogs'
            processor = "vpc_flow"
            max_event_bytes = 100
            [[selectors]]
            key = '.'
            processor = "json_lines"
            "#,
        );
        let p = cfg.resolve(TAG_CAP).unwrap();
        let Selection::Process { spec, .. } = p.select("AWSLogs/1/CloudTrail/x.json.gz") else {
            panic!()
        };
        assert_eq!(spec.kind, ProcessorKind::Cloudtrail);
        assert_eq!(spec.max_event_bytes, 500, "inherited");
        assert_eq!(spec.expand_field.as_deref(), Some("Records"));
        let Selection::Process { spec, .. } = p.select("x/vpcflowlogs/y") else {
            panic!()
        };
        assert_eq!(
            (spec.kind, spec.max_event_bytes),
            (ProcessorKind::VpcFlow, 100)
        );
        assert_eq!(kind_of(&p, "other"), Some(ProcessorKind::JsonLines));
        assert_eq!(kind_of(&p, "other.tmp"), None);
        assert_eq!(
            kind_of(&p, ""),
            Some(ProcessorKind::Lines),
            "no selector matched"
        );
    }

    #[test]
    fn cloudtrail_digests_skipped_unless_included() {
        let key = "AWSLogs/1/CloudTrail-Digest/us-east-1/2024/01/01/x.json.gz";
        let p = parse(r#"processor = "cloudtrail""#)
            .resolve(TAG_CAP)
            .unwrap();
        assert_eq!(kind_of(&p, key), None);
        let p = parse("processor = \"cloudtrail\"\ninclude_digests = true")
            .resolve(TAG_CAP)
            .unwrap();
        assert_eq!(kind_of(&p, key), Some(ProcessorKind::Cloudtrail));
    }

    #[test]
    fn include_limits_keys() {
        let p = parse(r#"include = ['\.gz$', '\.log$']"#)
            .resolve(TAG_CAP)
            .unwrap();
        assert!(kind_of(&p, "a.gz").is_some());
        assert!(kind_of(&p, "a.log").is_some());
        assert!(kind_of(&p, "a.json").is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("include = ['(']").resolve(TAG_CAP).unwrap_err();
        assert!(e.to_string().starts_with("include[0]"), "{e}");
        let e = parse("[[selectors]]\nkey = 'a'\ntag = 'bad'")
            .resolve(TAG_CAP)
            .unwrap_err();
        assert!(e.to_string().starts_with("selectors[0].tag"), "{e}");
        let e = parse("[[selectors]]\nkey = 'a'\nprocesor = 'json'")
            .resolve(TAG_CAP)
            .unwrap_err();
        assert!(e.to_string().contains("procesor"), "{e}");
        let e = parse("processor = 'extract'").resolve(TAG_CAP).unwrap_err();
        assert!(e.to_string().contains("extract_field"), "{e}");
        let e = parse("max_event_bytes = 0").resolve(TAG_CAP).unwrap_err();
        assert!(e.to_string().contains("max_event_bytes"), "{e}");
        assert!(toml::from_str::<ProcessingConfig>("processor = 'nope'").is_err());
        assert!(toml::from_str::<ProcessingConfig>("oversize = 'nope'").is_err());
    }

    #[test]
    fn flattens_into_an_outer_table() {
        #[derive(Deserialize)]
        struct Input {
            #[allow(dead_code)]
            queue: String,
            #[serde(flatten)]
            processing: ProcessingConfig,
        }
        let input: Input = toml::from_str(
            "queue = 'q'\nprocessor = 'vpc_flow'\nmax_event_bytes = 7\n[[selectors]]\nkey='x'\nprocessor='w3c'",
        )
        .unwrap();
        let p = input.processing.resolve(TAG_CAP).unwrap();
        assert_eq!(kind_of(&p, "a"), Some(ProcessorKind::VpcFlow));
        assert_eq!(kind_of(&p, "x"), Some(ProcessorKind::W3c));
    }

    #[test]
    fn clamps_every_event_cap_above_the_relays_and_names_it() {
        let cfg = parse(
            "max_event_bytes = 2000000\n[[selectors]]\nkey = 'a'\nmax_event_bytes = 100\n\
             [[selectors]]\nkey = 'b'\n",
        );
        let mut p = cfg.resolve(TAG_CAP).unwrap();
        let lowered = p.clamp_max_event_bytes(65_536);
        assert_eq!(
            lowered,
            vec![
                ("max_event_bytes".to_string(), 2_000_000),
                ("selectors[1].max_event_bytes".to_string(), 2_000_000)
            ]
        );
        let cap = |key: &str| match p.select(key) {
            Selection::Process { spec, .. } => spec.max_event_bytes,
            Selection::Skip { .. } => 0,
        };
        assert_eq!((cap("x"), cap("a"), cap("b")), (65_536, 100, 65_536));
        assert!(p.clamp_max_event_bytes(65_536).is_empty(), "idempotent");
    }

    #[test]
    fn finds_static_tags_over_the_cap_only() {
        let long = format!("my.app.{}", "x".repeat(300));
        let cfg = parse(&format!(
            "tag = 'my.app.ok'\n[[selectors]]\nkey = 'a'\ntag = 'my.{{f}}.{}'\n\
             [[selectors]]\nkey = 'b'\ntag = '{long}'\n",
            "y".repeat(300)
        ));
        let p = cfg.resolve(TAG_CAP).unwrap();
        assert_eq!(
            p.static_tag_over(256),
            Some(("selectors[1].tag".to_string(), long.len()))
        );
        assert_eq!(p.static_tag_over(1000), None);
    }

    #[test]
    fn every_spec_cuts_rendered_tags_to_the_cap_resolve_is_given() {
        let cfg =
            parse("processor = 'json_lines'\ntag = 'my.app.{a}.{b}'\n[[selectors]]\nkey = 's'\n");
        let p = cfg.resolve(20).unwrap();
        for key in ["x", "s"] {
            let Selection::Process { spec, .. } = p.select(key) else {
                panic!("{key} skipped")
            };
            assert_eq!(spec.max_tag_bytes, 20);
            // `my.app.0123456789.abcdef` is 24 bytes.
            let (r, sink) = run_key(br#"{"a":"0123456789","b":"abcdef"}"#, spec, key);
            r.unwrap();
            assert_eq!(sink.tags(), vec!["my.app.0123456789.ab"], "{key}");
        }
    }

    #[test]
    fn multiline_is_resolved_per_spec_and_only_for_line_processors() {
        let p = parse(
            "processor = 'lines'\n[multiline]\npattern = '^\\['\nnegate = true\nmatch = 'after'\n\
             [[selectors]]\nkey = 'a'\n[selectors.multiline]\npattern = 'x'\nmatch = 'before'\n\
             max_lines = 3\nmax_bytes = 100\n",
        )
        .resolve(TAG_CAP)
        .unwrap();
        let ml = |key: &str| match p.select(key) {
            Selection::Process { spec, .. } => spec.multiline.clone().unwrap(),
            Selection::Skip { .. } => panic!("{key} skipped"),
        };
        let (input, sel) = (ml("x"), ml("a"));
        assert_eq!((input.pattern.as_str(), input.negate), ("^\\[", true));
        assert_eq!((input.max_lines, input.max_bytes), (500, None));
        assert_eq!(sel.match_, super::super::multiline::MultilineMatch::Before);
        assert_eq!(
            (sel.negate, sel.max_lines, sel.max_bytes),
            (false, 3, Some(100))
        );
        let e = parse("processor = 'json'\n[multiline]\npattern = 'x'\nmatch = 'after'")
            .resolve(TAG_CAP)
            .unwrap_err();
        assert!(e.to_string().starts_with("input.multiline:"), "{e}");
        let e = parse(
            "[[selectors]]\nkey = 'a'\n[selectors.multiline]\npattern = '('\nmatch = 'after'",
        )
        .resolve(TAG_CAP)
        .unwrap_err();
        assert!(e.to_string().starts_with("selectors[0].multiline:"), "{e}");
    }

    #[test]
    fn processing_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Processing>();
    }
}
