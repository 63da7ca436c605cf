//! Collector configuration: the TOML file as users write it (raw layer, every field
//! documented, unknown keys refused by name) and the validated settings the runtime uses.
//!
//! Input parameters keep the Devo S3/SQS collector's names (`base_url`, `ack_messages`,
//! `sqs_visibility_timeout`…) so an existing Devo setup carries over. This module reads and
//! checks; it does not build AWS clients (see `aws`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::processor::config::{Processing, ProcessingConfig, PROCESSING_KEYS};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("unknown key `{key}` in {table}")]
    UnknownKey { table: String, key: String },
    #[error(transparent)]
    Env(#[from] sluice_common::env::InterpolateError),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the relay listens.
    pub relay: RawRelay,
    /// How events are cut into batches.
    #[serde(default)]
    pub batch: RawBatch,
    /// Process-wide knobs.
    #[serde(default)]
    pub collector: RawCollector,
    /// How objects are downloaded.
    #[serde(default)]
    pub fetch: RawFetch,
    /// The queues to drain. Kept as tables: keys are checked by hand because the processing
    /// keys are flattened in (serde cannot refuse unknown keys through `flatten`).
    #[serde(default)]
    pub inputs: Vec<toml::Table>,
}

/// `[relay]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// `http://127.0.0.1:7700` or `unix:/run/sluice/relay.sock`.
    pub url: String,
    /// Bearer token shared with the relay, if it requires one.
    pub token: Option<String>,
    /// Bound on one POST exchange, in seconds. Default 30.
    pub timeout_secs: Option<u64>,
}

/// `[batch]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most events in one batch. Default 10000.
    pub max_events: Option<u64>,
    /// Most uncompressed bytes in one batch. Default 1 MiB (with 8 messages in flight and two
    /// batches queued per object, this bounds the collector's batch memory).
    pub max_bytes: Option<u64>,
    /// Oldest event may wait this long before its batch is sent, in ms. Default 1000.
    pub max_age_ms: Option<u64>,
    /// gzip level of the channel, 0..9. Default 1 (cheapest that still compresses).
    pub compression_level: Option<u32>,
}

/// `[fetch]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    /// Bytes per ranged GET; larger objects are read in parts. Default 4 MiB.
    pub part_bytes: Option<u64>,
    /// Ranged GETs in flight per object. Default 4.
    pub parallel_parts: Option<usize>,
    /// Parts held in memory at once, whole process (bounds download memory to this × part
    /// size). Default 4.
    pub max_parts_in_flight: Option<usize>,
}

/// `[collector]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    /// Names this collector in idempotency keys and logs. Default: the hostname.
    pub id: Option<String>,
    /// Most SQS messages being worked on at once, over all inputs. Default 8.
    pub max_messages_in_flight: Option<usize>,
    /// How long shutdown waits for in-flight messages, in seconds. Default 30.
    pub shutdown_timeout_secs: Option<u64>,
    /// `host:port` for `GET /metrics`; off when unset.
    pub metrics_address: Option<String>,
    /// Directory for the processed-object ledgers; in memory only when unset.
    pub state_dir: Option<std::path::PathBuf>,
}

/// One `[[inputs]]` table, before validation.
#[derive(Debug, Deserialize)]
pub struct RawInput {
    /// Name used in logs and metrics. Default `input-N`.
    pub name: Option<String>,
    /// The SQS queue URL (Devo: `base_url`).
    pub base_url: String,
    /// AWS region; default: parsed from `base_url`, else the standard chain.
    pub region: Option<String>,
    /// Endpoint for emulators and S3-compatible stores (S3 then uses path-style).
    pub endpoint_url: Option<String>,
    /// Static access key; with `aws_secret_access_key`. Default: the standard chain.
    pub aws_access_key_id: Option<String>,
    /// Static secret key.
    pub aws_secret_access_key: Option<String>,
    /// Devo: a role to assume first with the base credentials (`arn:aws:iam::…:role/…`).
    pub aws_base_account_role: Option<String>,
    /// Devo: the role to assume next, with the base role's credentials (cross-account).
    pub aws_cross_account_role: Option<String>,
    /// Devo: external id sent with the AssumeRole calls.
    pub aws_external_id: Option<String>,
    /// Ledger entry lifetime, seconds. Default 7 days.
    pub ledger_ttl_secs: Option<u64>,
    /// Most ledger entries kept, checkpoints included (oldest evicted). Default 100000.
    pub ledger_max_entries: Option<usize>,
    /// Devo: false skips the input. Default true.
    pub enabled: Option<bool>,
    /// Devo: short id of this input (1 to 5 characters), used in state names.
    pub short_unique_id: Option<toml::Value>,
    /// Devo: delete messages once confirmed. false is a testing mode. Default true.
    pub ack_messages: Option<bool>,
    /// Seconds a received message stays invisible (and is extended by). Default 120.
    pub sqs_visibility_timeout: Option<i64>,
    /// Long-poll wait, seconds. Default 20.
    pub sqs_wait_timeout: Option<i64>,
    /// Messages per receive, 1..10. Default 1 (Devo's).
    pub sqs_max_messages: Option<i64>,
    /// Poll loops on this queue. Default 1.
    pub pollers: Option<usize>,
    /// Receives after which a failing message is poison. Default: off when the queue has a
    /// redrive policy (its dead-letter queue takes over), else 5.
    pub max_receive_count: Option<u32>,
    /// What happens to a poison message: `keep` (left for the dead-letter queue) or
    /// `delete` (after logging it). Default `keep` with a redrive policy, else `delete`.
    pub poison_action: Option<String>,
    /// Devo: process everything, send nothing (a counting dry run). Default false.
    pub do_not_send: Option<bool>,
    /// Devo: the SQS body itself is the event (no S3 access). Default false.
    pub direct_mode: Option<bool>,
    /// Devo: also send, per message, one event to `my.app.sqs.message_body` with the body's
    /// md5, message id, receive count and objects (for hunting duplicates). Default false.
    pub debug_md5: Option<bool>,
    /// How objects are selected, split and tagged (keys listed in `PROCESSING_KEYS`).
    #[serde(flatten)]
    pub processing: ProcessingConfig,
}

/// Keys of `[[inputs]]` this module reads.
const INPUT_KEYS: &[&str] = &[
    "name",
    "base_url",
    "region",
    "endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_base_account_role",
    "aws_cross_account_role",
    "aws_external_id",
    "ledger_ttl_secs",
    "ledger_max_entries",
    "enabled",
    "short_unique_id",
    "ack_messages",
    "sqs_visibility_timeout",
    "sqs_wait_timeout",
    "sqs_max_messages",
    "pollers",
    "max_receive_count",
    "poison_action",
    "do_not_send",
    "direct_mode",
    "debug_md5",
];

pub use sluice_common::Secret;

/// Validated collector settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Relay URL.
    pub relay_url: String,
    /// Relay bearer token.
    pub relay_token: Option<Secret>,
    /// Bound on one POST.
    pub relay_timeout: Duration,
    /// Batch cuts.
    pub batch: BatchSettings,
    /// Collector id for idempotency keys.
    pub collector_id: String,
    /// Messages in flight, all inputs.
    pub max_messages_in_flight: usize,
    /// Shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Metrics listener.
    pub metrics_address: Option<String>,
    /// Download parts.
    pub fetch: FetchLimits,
    /// Enabled inputs.
    pub inputs: Vec<InputSettings>,
}

/// Where and how long the processed-object ledger keeps entries.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// The ledger file; `None` keeps the ledger in memory (no `collector.state_dir`).
    pub path: Option<std::path::PathBuf>,
    /// Entry lifetime.
    pub ttl: Duration,
    /// Most entries.
    pub max_entries: usize,
}

/// What happens to a message that failed `max_receive_count` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonAction {
    /// Log it and leave it: the queue's redrive policy moves it to the dead-letter queue.
    Keep,
    /// Log it with its history and delete it.
    Delete,
}

/// How objects are downloaded.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Bytes per ranged GET.
    pub part_bytes: u64,
    /// Ranged GETs in flight per object.
    pub parallel_parts: usize,
    /// Parts in memory, whole process.
    pub max_parts_in_flight: usize,
}

/// When a batch is cut.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Events per batch.
    pub max_events: u64,
    /// Uncompressed bytes per batch.
    pub max_bytes: u64,
    /// Age of the oldest event.
    pub max_age: Duration,
    /// gzip level.
    pub compression_level: u32,
}

/// One validated input.
#[derive(Debug, Clone)]
pub struct InputSettings {
    /// Name in logs and metrics.
    pub name: String,
    /// Queue URL.
    pub queue_url: String,
    /// Region, when known.
    pub region: Option<String>,
    /// Custom endpoint.
    pub endpoint_url: Option<String>,
    /// Static credentials (id, secret).
    pub static_keys: Option<(String, Secret)>,
    /// Roles to assume, in order (base account role, then cross-account role).
    pub assume_roles: Vec<String>,
    /// External id for the AssumeRole calls.
    pub external_id: Option<String>,
    /// Delete confirmed messages.
    pub ack_messages: bool,
    /// Visibility timeout.
    pub visibility_timeout: Duration,
    /// Long-poll wait.
    pub wait_time: Duration,
    /// Messages per receive.
    pub max_messages: i32,
    /// Poll loops.
    pub pollers: usize,
    /// Poison threshold as configured (None: decided from the queue's redrive policy).
    pub max_receive_count: Option<u32>,
    /// Poison action as configured.
    pub poison_action: Option<PoisonAction>,
    /// Dry run: batches are counted, not sent.
    pub do_not_send: bool,
    /// The processed-object ledger: in memory, or with `collector.state_dir` the file
    /// `<state_dir>/<short_unique_id or name>/objects.ledger`.
    pub ledger: LedgerSettings,
    /// Direct mode: bodies are events.
    pub direct_mode: bool,
    /// Send the md5 event per message.
    pub debug_md5: bool,
    /// How objects are selected, split and tagged.
    pub processing: Processing,
}

impl Settings {
    /// Reads, interpolates and validates `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Settings::parse(&text, &path.display().to_string())
    }

    /// Parses a configuration text; `origin` names it in errors.
    ///
    /// `${VAR}` is replaced inside string values after the TOML is parsed, never in the text:
    /// so a parse error can only quote what the file says (a secret from the environment
    /// never shows in an error), and a variable's value cannot add keys to the file.
    pub fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        };
        let mut value: toml::Value = toml::from_str(text).map_err(parse_error)?;
        sluice_common::env::interpolate_toml(&mut value, &sluice_common::env::process_env)?;
        let raw: RawConfig = value.try_into().map_err(parse_error)?;
        Settings::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        sluice_channel::client::Endpoint::parse(&raw.relay.url)
            .map_err(|e| invalid("relay.url", e.to_string()))?;
        let batch = BatchSettings {
            max_events: raw.batch.max_events.unwrap_or(10_000).max(1),
            max_bytes: raw.batch.max_bytes.unwrap_or(1 << 20).max(1),
            max_age: Duration::from_millis(raw.batch.max_age_ms.unwrap_or(1000)),
            compression_level: raw.batch.compression_level.unwrap_or(1),
        };
        if batch.compression_level > 9 {
            return Err(invalid("batch.compression_level", "must be 0 to 9"));
        }
        // Keys are `<id>.<16 hex>:<sequence>` and may be 128 bytes: 64 leaves room.
        let collector_id = match raw.collector.id {
            Some(id) => id,
            None => sluice_common::host::hostname()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect(),
        };
        if collector_id.len() > 64 || !sluice_channel::wire::validate_idempotency_key(&collector_id)
        {
            return Err(invalid(
                "collector.id",
                "use 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let mut inputs = Vec::new();
        let mut names = BTreeSet::new();
        for (i, table) in raw.inputs.into_iter().enumerate() {
            let table_name = format!("inputs[{i}]");
            for key in table.keys() {
                if !INPUT_KEYS.contains(&key.as_str()) && !PROCESSING_KEYS.contains(&key.as_str()) {
                    return Err(ConfigError::UnknownKey {
                        table: table_name,
                        key: key.clone(),
                    });
                }
            }
            let input: RawInput =
                toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: table_name.clone(),
                        message: e.to_string(),
                    })?;
            let name = input.name.clone().unwrap_or_else(|| format!("input-{i}"));
            if !names.insert(name.clone()) {
                return Err(invalid(
                    table_name,
                    format!("duplicate input name {name:?}"),
                ));
            }
            if input.enabled == Some(false) {
                tracing::info!(input = %name, "input disabled (enabled = false), skipped");
                continue;
            }
            inputs.push(validate_input(
                &name,
                input,
                raw.collector.state_dir.as_deref(),
            )?);
        }
        if inputs.is_empty() {
            return Err(invalid("inputs", "no enabled [[inputs]]"));
        }
        Ok(Settings {
            relay_url: raw.relay.url,
            relay_token: raw.relay.token.map(Secret::new),
            relay_timeout: Duration::from_secs(raw.relay.timeout_secs.unwrap_or(30).max(1)),
            batch,
            collector_id,
            max_messages_in_flight: raw.collector.max_messages_in_flight.unwrap_or(8).max(1),
            shutdown_timeout: Duration::from_secs(
                raw.collector.shutdown_timeout_secs.unwrap_or(30),
            ),
            metrics_address: raw.collector.metrics_address,
            fetch: FetchLimits {
                part_bytes: raw.fetch.part_bytes.unwrap_or(4 << 20).max(64 << 10),
                parallel_parts: raw.fetch.parallel_parts.unwrap_or(4).max(1),
                max_parts_in_flight: raw.fetch.max_parts_in_flight.unwrap_or(4).max(1),
            },
            inputs,
        })
    }
}

/// A setting lowered to fit the relay's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamped {
    /// The key, as written (`batch.max_bytes`, `inputs.NAME.max_event_bytes`).
    pub key: String,
    /// The configured (or default) value.
    pub from: u64,
    /// The value used.
    pub to: u64,
}

impl Settings {
    /// Fits the configuration to the caps agreed with the relay (docs/channel.md, "Limits").
    /// Keys that are safe to lower are lowered, each returned for a warning:
    /// `batch.max_bytes` (smaller batches only) and every `max_event_bytes` (over-long events
    /// then meet the input's `oversize` rule at the relay's cap, counted). A key that can
    /// never fit is refused, naming it: a static `tag` longer than the relay's tag cap.
    pub fn apply_limits(
        &mut self,
        agreed: &crate::limits::Agreed,
    ) -> Result<Vec<Clamped>, ConfigError> {
        let mut clamped = Vec::new();
        let max_tag = usize::try_from(agreed.relay.max_tag_bytes).unwrap_or(usize::MAX);
        for input in &self.inputs {
            if let Some((key, len)) = input.processing.static_tag_over(max_tag) {
                return Err(invalid(
                    format!("inputs.{}.{key}", input.name),
                    format!(
                        "{len} bytes, longer than the relay's tag cap ({max_tag}): no event under it could be delivered"
                    ),
                ));
            }
        }
        if self.batch.max_bytes > agreed.batch_bytes {
            clamped.push(Clamped {
                key: "batch.max_bytes".into(),
                from: self.batch.max_bytes,
                to: agreed.batch_bytes,
            });
            self.batch.max_bytes = agreed.batch_bytes;
        }
        let cap = usize::try_from(agreed.event_bytes).unwrap_or(usize::MAX);
        for input in &mut self.inputs {
            for (key, from) in input.processing.clamp_max_event_bytes(cap) {
                clamped.push(Clamped {
                    key: format!("inputs.{}.{key}", input.name),
                    from: from as u64,
                    to: cap as u64,
                });
            }
        }
        Ok(clamped)
    }
}

/// Checks `value` against SQS's range and warns when it is outside Devo's narrower one.
fn ranged(
    input: &str,
    key: &str,
    value: Option<i64>,
    default: i64,
    sqs: (i64, i64),
    devo: (i64, i64),
) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < sqs.0 || v > sqs.1 {
        return Err(invalid(
            format!("inputs.{input}.{key}"),
            format!("{v} is outside SQS's range {}..={}", sqs.0, sqs.1),
        ));
    }
    if v < devo.0 || v > devo.1 {
        tracing::warn!(
            input,
            key,
            value = v,
            "outside the Devo collector's documented range {}..={}; accepted",
            devo.0,
            devo.1
        );
    }
    Ok(v)
}

fn validate_input(
    name: &str,
    input: RawInput,
    state_dir: Option<&Path>,
) -> Result<InputSettings, ConfigError> {
    let field = |key: &str| format!("inputs.{name}.{key}");
    if !input.base_url.starts_with("http://") && !input.base_url.starts_with("https://") {
        return Err(invalid(
            field("base_url"),
            "must be the queue URL (https://sqs…)",
        ));
    }
    let visibility = ranged(
        name,
        "sqs_visibility_timeout",
        input.sqs_visibility_timeout,
        120,
        (0, 43200),
        (120, 43200),
    )?;
    let wait = ranged(
        name,
        "sqs_wait_timeout",
        input.sqs_wait_timeout,
        20,
        (0, 20),
        (20, 20),
    )?;
    let max_messages = ranged(
        name,
        "sqs_max_messages",
        input.sqs_max_messages,
        1,
        (1, 10),
        (1, 10),
    )?;
    let static_keys = match (input.aws_access_key_id, input.aws_secret_access_key) {
        (Some(id), Some(secret)) => Some((id, Secret::new(secret))),
        (None, None) => None,
        _ => {
            return Err(invalid(
                field("aws_access_key_id"),
                "aws_access_key_id and aws_secret_access_key go together",
            ))
        }
    };
    let short_id = match &input.short_unique_id {
        Some(id) => {
            let text = match id {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if text.is_empty()
                || text.len() > 5
                || !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    field("short_unique_id"),
                    "1 to 5 characters of A-Z a-z 0-9 - _",
                ));
            }
            Some(text)
        }
        None => None,
    };
    // The namespace is a path component: the input name qualifies only if it is a safe one.
    let namespace = short_id.unwrap_or_else(|| {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    });
    let ledger = LedgerSettings {
        path: state_dir.map(|dir| dir.join(namespace).join("objects.ledger")),
        ttl: Duration::from_secs(input.ledger_ttl_secs.unwrap_or(7 * 24 * 3600)),
        max_entries: input.ledger_max_entries.unwrap_or(100_000).max(1),
    };
    let processing = input
        .processing
        .resolve()
        .map_err(|e| invalid(format!("inputs.{name}"), e.to_string()))?;
    let poison_action = match input.poison_action.as_deref() {
        None => None,
        Some("keep") => Some(PoisonAction::Keep),
        Some("delete") => Some(PoisonAction::Delete),
        Some(o) => {
            return Err(invalid(
                field("poison_action"),
                format!("{o:?}: use keep or delete"),
            ))
        }
    };
    if input.max_receive_count == Some(0) {
        return Err(invalid(field("max_receive_count"), "must be at least 1"));
    }
    let region = input
        .region
        .or_else(|| region_from_queue_url(&input.base_url));
    Ok(InputSettings {
        name: name.to_string(),
        queue_url: input.base_url,
        region,
        endpoint_url: input.endpoint_url,
        static_keys,
        assume_roles: input
            .aws_base_account_role
            .into_iter()
            .chain(input.aws_cross_account_role)
            .collect(),
        external_id: input.aws_external_id,
        ack_messages: input.ack_messages.unwrap_or(true),
        visibility_timeout: Duration::from_secs(visibility as u64),
        wait_time: Duration::from_secs(wait as u64),
        max_messages: max_messages as i32,
        pollers: input.pollers.unwrap_or(1).clamp(1, 64),
        max_receive_count: input.max_receive_count,
        poison_action,
        do_not_send: input.do_not_send.unwrap_or(false),
        ledger,
        direct_mode: input.direct_mode.unwrap_or(false),
        debug_md5: input.debug_md5.unwrap_or(false),
        processing,
    })
}

/// `https://sqs.eu-west-1.amazonaws.com/…` → `eu-west-1`.
fn region_from_queue_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    if parts.next()? != "sqs" {
        return None;
    }
    let region = parts.next()?;
    (parts.next() == Some("amazonaws")).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[relay]
url = "http://127.0.0.1:7700"

[[inputs]]
name = "cloudtrail"
base_url = "https://sqs.us-east-1.amazonaws.com/123456789012/cloudtrail"
tag = "cloud.aws.cloudtrail.events"
"#;

    #[test]
    fn defaults_are_devos() {
        let s = Settings::parse(MINIMAL, "t").unwrap();
        let i = &s.inputs[0];
        assert_eq!(i.visibility_timeout, Duration::from_secs(120));
        assert_eq!(i.wait_time, Duration::from_secs(20));
        assert_eq!(i.max_messages, 1);
        assert!(i.ack_messages);
        assert_eq!(i.region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("tag =", "tagg =");
        let err = Settings::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("`tagg`"), "{err}");
        let text = format!("{MINIMAL}\n[batch]\nmax_eventz = 3\n");
        let err = Settings::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("max_eventz"), "{err}");
    }

    #[test]
    fn ranges() {
        let text = format!("{MINIMAL}sqs_max_messages = 11\n");
        assert!(Settings::parse(&text, "t").is_err());
        // Below Devo's minimum but valid for SQS: accepted with a warning.
        let text = format!("{MINIMAL}sqs_visibility_timeout = 5\nsqs_wait_timeout = 1\n");
        let s = Settings::parse(&text, "t").unwrap();
        assert_eq!(s.inputs[0].visibility_timeout, Duration::from_secs(5));
    }

    #[test]
    fn secrets_never_reach_errors_nor_add_keys() {
        std::env::set_var("SLUICE_TEST_SECRET", "S3CRET\"\nextra = 1");
        // Unquoted: a TOML error, which can only quote the file, not the value.
        let text = MINIMAL.replace("[relay]\n", "[relay]\ntoken = ${SLUICE_TEST_SECRET}\n");
        let err = Settings::parse(&text, "t").unwrap_err().to_string();
        assert!(!err.contains("S3CRET"), "{err}");
        // Quoted: the value is the token, quote and newline included; nothing is injected.
        let text = MINIMAL.replace("[relay]\n", "[relay]\ntoken = \"${SLUICE_TEST_SECRET}\"\n");
        let settings = Settings::parse(&text, "t").unwrap();
        let token = settings.relay_token.as_ref().unwrap();
        assert_eq!(token.expose(), "S3CRET\"\nextra = 1");
        assert!(!format!("{settings:?}").contains("S3CRET"));
    }

    #[test]
    fn disabled_inputs_are_skipped() {
        let text = format!("{MINIMAL}enabled = false\n");
        assert!(Settings::parse(&text, "t").is_err()); // no enabled input left
    }

    #[test]
    fn limits_lower_what_is_safe_to_lower_and_refuse_what_never_fits() {
        use crate::limits::Agreed;
        use sluice_channel::limits::ChannelLimits;
        let text = format!(
            "{MINIMAL}max_event_bytes = 2000000\n[[inputs.selectors]]\nkey = 'x'\nmax_event_bytes = 10\n\
             [batch]\nmax_bytes = 900000000\n"
        );
        let mut s = Settings::parse(&text, "t").unwrap();
        let agreed = Agreed::new(ChannelLimits {
            max_event_bytes: 65_536,
            ..ChannelLimits::V1_DEFAULTS
        })
        .unwrap();
        let clamped = s.apply_limits(&agreed).unwrap();
        assert_eq!(
            clamped,
            vec![
                Clamped {
                    key: "batch.max_bytes".into(),
                    from: 900_000_000,
                    to: agreed.batch_bytes
                },
                Clamped {
                    key: "inputs.cloudtrail.max_event_bytes".into(),
                    from: 2_000_000,
                    to: 65_536
                },
            ]
        );
        assert!(crate::limits::gzip_bound(s.batch.max_bytes) <= 16 << 20);
        assert!(s.apply_limits(&agreed).unwrap().is_empty(), "idempotent");
        // Defaults that fit stay as they are.
        let mut s = Settings::parse(MINIMAL, "t").unwrap();
        let defaults = Agreed::new(ChannelLimits::V1_DEFAULTS).unwrap();
        assert!(s.apply_limits(&defaults).unwrap().is_empty());
        assert_eq!(s.batch.max_bytes, 1 << 20);
        // A static tag the relay can never take is refused by name.
        let long = format!("my.app.{}", "x".repeat(300));
        let text = MINIMAL.replace("cloud.aws.cloudtrail.events", &long);
        let mut s = Settings::parse(&text, "t").unwrap();
        let err = s.apply_limits(&defaults).unwrap_err().to_string();
        assert!(err.starts_with("inputs.cloudtrail.tag:"), "{err}");
    }

    #[test]
    fn bad_tag() {
        let text = MINIMAL.replace("cloud.aws.cloudtrail.events", "bad tag");
        assert!(Settings::parse(&text, "t").is_err());
    }
}
