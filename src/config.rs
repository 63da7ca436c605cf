//! Collector configuration: the TOML file as users write it (raw layer, every field
//! documented, unknown keys refused by name) and the validated settings the runtime uses.
//!
//! Input parameters keep the Devo S3/SQS collector's names (`base_url`, `ack_messages`,
//! `sqs_visibility_timeout`…) so an existing Devo setup carries over. Every default is a
//! `DEFAULT_…` constant at the top of this file (README.md lists the same values; a test keeps
//! them in step). This module reads and checks; it does not build AWS clients (see `aws`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use sluice_formats::processor::config::{Processing, ProcessingConfig, PROCESSING_KEYS};

// ---------------------------------------------------------------------------------------------
// Defaults and bounds: each written once, here; README.md ("Configuration") lists the same
// values for users, and a test below checks that the two agree.
// ---------------------------------------------------------------------------------------------

/// `relay.timeout_secs`: bound on one POST exchange with the relay, in seconds (at least 1).
pub const DEFAULT_RELAY_TIMEOUT_SECS: u64 = 30;
/// `batch.max_events`: most events in one batch (at least 1).
pub const DEFAULT_BATCH_MAX_EVENTS: u64 = 10_000;
/// `batch.max_bytes`: most uncompressed bytes in one batch, 1 MiB (at least 1). With 8
/// messages in flight and two batches queued per object, this bounds the batch memory.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 1 << 20;
/// `batch.max_age_ms`: how long the oldest event of a batch may wait, in milliseconds.
pub const DEFAULT_BATCH_MAX_AGE_MS: u64 = 1000;
/// `batch.compression_level`: gzip level of the channel (the cheapest that still compresses).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;
/// Highest accepted `batch.compression_level` (gzip's levels are 0 to 9).
pub const MAX_COMPRESSION_LEVEL: u32 = 9;
/// Longest `collector.id`, in bytes. Idempotency keys are `<id>.<16 hex>:<sequence>` and may
/// be 128 bytes long: 64 leaves room for the rest.
pub const MAX_COLLECTOR_ID_BYTES: usize = 64;
/// `collector.max_messages_in_flight`: SQS messages worked on at once, all inputs (at least 1).
pub const DEFAULT_MAX_MESSAGES_IN_FLIGHT: usize = 8;
/// `collector.shutdown_timeout_secs`: how long shutdown waits for in-flight messages, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// `fetch.part_bytes`: bytes per ranged GET, 4 MiB.
pub const DEFAULT_PART_BYTES: u64 = 4 << 20;
/// Smallest `fetch.part_bytes` used, 64 KiB (a smaller value is raised to it): tinier parts
/// would cost a request each for little data.
pub const MIN_PART_BYTES: u64 = 64 << 10;
/// `fetch.parallel_parts`: ranged GETs in flight per object (at least 1).
pub const DEFAULT_PARALLEL_PARTS: usize = 4;
/// `fetch.max_parts_in_flight`: parts held in memory at once, whole process (at least 1).
pub const DEFAULT_MAX_PARTS_IN_FLIGHT: usize = 4;

/// `inputs.enabled`: an input runs unless it says `enabled = false`.
pub const DEFAULT_ENABLED: bool = true;
/// `inputs.ack_messages`: confirmed messages are deleted (false is Devo's testing mode).
pub const DEFAULT_ACK_MESSAGES: bool = true;
/// `inputs.sqs_visibility_timeout`: seconds a received message stays invisible (Devo's).
pub const DEFAULT_SQS_VISIBILITY_TIMEOUT_SECS: i64 = 120;
/// `inputs.sqs_wait_timeout`: long-poll wait, seconds (Devo's).
pub const DEFAULT_SQS_WAIT_TIMEOUT_SECS: i64 = 20;
/// `inputs.sqs_max_messages`: messages per receive (Devo's).
pub const DEFAULT_SQS_MAX_MESSAGES: i64 = 1;
/// `inputs.pollers`: poll loops per queue.
pub const DEFAULT_POLLERS: usize = 1;
/// Most `inputs.pollers` (a larger value is lowered to it).
pub const MAX_POLLERS: usize = 64;
/// `inputs.ledger_ttl_secs`: ledger entry lifetime, 7 days in seconds.
pub const DEFAULT_LEDGER_TTL_SECS: u64 = 7 * 24 * 3600;
/// `inputs.ledger_max_entries`: ledger entries kept, checkpoints included (at least 1).
pub const DEFAULT_LEDGER_MAX_ENTRIES: usize = 100_000;
/// `inputs.max_receive_count` when unset and the queue has no redrive policy: receives after
/// which a failing message is poison (with a redrive policy the dead-letter queue decides).
/// Applied where the redrive policy is known, when the pipeline starts.
pub const DEFAULT_MAX_RECEIVE_COUNT_WITHOUT_REDRIVE: u32 = 5;
/// `inputs.do_not_send`: Devo's counting dry run is off.
pub const DEFAULT_DO_NOT_SEND: bool = false;
/// `inputs.direct_mode`: bodies are notifications, not events.
pub const DEFAULT_DIRECT_MODE: bool = false;
/// `inputs.debug_md5`: no per-message md5 event.
pub const DEFAULT_DEBUG_MD5: bool = false;

/// An SQS number of `[[inputs]]`: its key, its default, the range SQS accepts (outside it the
/// configuration is refused) and the narrower range the Devo collector documents (outside it
/// the value is accepted with a warning).
#[derive(Debug, Clone, Copy)]
pub struct SqsRange {
    /// The key in `[[inputs]]`.
    pub key: &'static str,
    /// The value when the key is absent.
    pub default: i64,
    /// Inclusive bounds SQS accepts.
    pub sqs: (i64, i64),
    /// Inclusive bounds the Devo collector documents.
    pub devo: (i64, i64),
}

/// `inputs.sqs_visibility_timeout`, seconds: SQS allows 0 to 12 hours, Devo documents 120 up.
pub const SQS_VISIBILITY_TIMEOUT: SqsRange = SqsRange {
    key: "sqs_visibility_timeout",
    default: DEFAULT_SQS_VISIBILITY_TIMEOUT_SECS,
    sqs: (0, 43200),
    devo: (120, 43200),
};
/// `inputs.sqs_wait_timeout`, seconds: SQS allows 0 to 20, Devo documents 20 only.
pub const SQS_WAIT_TIMEOUT: SqsRange = SqsRange {
    key: "sqs_wait_timeout",
    default: DEFAULT_SQS_WAIT_TIMEOUT_SECS,
    sqs: (0, 20),
    devo: (20, 20),
};
/// `inputs.sqs_max_messages`: SQS returns 1 to 10 messages per receive.
pub const SQS_MAX_MESSAGES: SqsRange = SqsRange {
    key: "sqs_max_messages",
    default: DEFAULT_SQS_MAX_MESSAGES,
    sqs: (1, 10),
    devo: (1, 10),
};

/// The accepted range of a numeric key, inclusive. A value outside it is refused at load with
/// an error naming the key and the range, never left to fail (or panic) later: a semaphore
/// panics above 2^61 permits, an `Instant` or `SystemTime` plus a huge duration panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    /// The key: `table.key`, or for `[[inputs]]` the key within the input.
    pub key: &'static str,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
}

impl KeyRange {
    /// `value` (or `default` when unset), checked; `key` names it in the error (the input's
    /// keys are named `inputs.NAME.key`).
    fn check(self, key: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(default);
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                key,
                format!("{v} is outside {}..={}", self.min, self.max),
            ))
        }
    }

    /// [`KeyRange::check`] for a key of `[relay]`, `[batch]`, `[collector]` or `[fetch]`.
    fn get(self, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
        self.check(self.key, value, default)
    }

    /// [`KeyRange::check`] for a `usize` key.
    fn get_usize(self, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
        // usize is at most 64 bits here, and every max fits 32 bits.
        self.get(value.map(|v| v as u64), default as u64)
            .map(|v| v as usize)
    }
}

/// `relay.timeout_secs`: 1 s to a day.
pub const RELAY_TIMEOUT_SECS: KeyRange = KeyRange {
    key: "relay.timeout_secs",
    min: 1,
    max: 86_400,
};
/// `batch.max_events`: 1 to 10 million.
pub const BATCH_MAX_EVENTS: KeyRange = KeyRange {
    key: "batch.max_events",
    min: 1,
    max: 10_000_000,
};
/// `batch.max_bytes`: 1 byte to 1 GiB (then lowered to what the relay accepts).
pub const BATCH_MAX_BYTES: KeyRange = KeyRange {
    key: "batch.max_bytes",
    min: 1,
    max: 1 << 30,
};
/// `batch.max_age_ms`: 0 (every event sent as it comes) to an hour.
pub const BATCH_MAX_AGE_MS: KeyRange = KeyRange {
    key: "batch.max_age_ms",
    min: 0,
    max: 3_600_000,
};
/// `batch.compression_level`: gzip's levels.
pub const BATCH_COMPRESSION_LEVEL: KeyRange = KeyRange {
    key: "batch.compression_level",
    min: 0,
    max: MAX_COMPRESSION_LEVEL as u64,
};
/// `collector.max_messages_in_flight`: 1 to 4096.
pub const MAX_MESSAGES_IN_FLIGHT: KeyRange = KeyRange {
    key: "collector.max_messages_in_flight",
    min: 1,
    max: 4096,
};
/// `collector.shutdown_timeout_secs`: 0 (stop at once) to a day.
pub const SHUTDOWN_TIMEOUT_SECS: KeyRange = KeyRange {
    key: "collector.shutdown_timeout_secs",
    min: 0,
    max: 86_400,
};
/// `fetch.part_bytes`: up to 1 GiB; below [`MIN_PART_BYTES`] (0 included) it is raised to it.
pub const PART_BYTES: KeyRange = KeyRange {
    key: "fetch.part_bytes",
    min: 0,
    max: 1 << 30,
};
/// `fetch.parallel_parts`: 1 to 64.
pub const PARALLEL_PARTS: KeyRange = KeyRange {
    key: "fetch.parallel_parts",
    min: 1,
    max: 64,
};
/// `fetch.max_parts_in_flight`: 1 to 4096.
pub const MAX_PARTS_IN_FLIGHT: KeyRange = KeyRange {
    key: "fetch.max_parts_in_flight",
    min: 1,
    max: 4096,
};
/// `inputs.ledger_ttl_secs`: 1 s to 366 days.
pub const LEDGER_TTL_SECS: KeyRange = KeyRange {
    key: "ledger_ttl_secs",
    min: 1,
    max: 366 * 24 * 3600,
};
/// `inputs.ledger_max_entries`: 1 to 10 million (about 100 bytes each).
pub const LEDGER_MAX_ENTRIES: KeyRange = KeyRange {
    key: "ledger_max_entries",
    min: 1,
    max: 10_000_000,
};
/// `inputs.pollers`: 0 is raised to 1, more than [`MAX_POLLERS`] lowered to it; refused above
/// this (surely a typo).
pub const POLLERS: KeyRange = KeyRange {
    key: "pollers",
    min: 0,
    max: 1_000_000,
};
/// `inputs.max_receive_count`: 1 to 1000, as SQS's `maxReceiveCount`.
pub const MAX_RECEIVE_COUNT: KeyRange = KeyRange {
    key: "max_receive_count",
    min: 1,
    max: 1000,
};

/// Every numeric key's range (the `sqs_*` keys of `[[inputs]]` have their own, [`SqsRange`]).
pub const RANGES: &[KeyRange] = &[
    RELAY_TIMEOUT_SECS,
    BATCH_MAX_EVENTS,
    BATCH_MAX_BYTES,
    BATCH_MAX_AGE_MS,
    BATCH_COMPRESSION_LEVEL,
    MAX_MESSAGES_IN_FLIGHT,
    SHUTDOWN_TIMEOUT_SECS,
    PART_BYTES,
    PARALLEL_PARTS,
    MAX_PARTS_IN_FLIGHT,
    LEDGER_TTL_SECS,
    LEDGER_MAX_ENTRIES,
    POLLERS,
    MAX_RECEIVE_COUNT,
];

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
    /// The queues to drain. Kept as tables: each holds the input's own keys ([`RawInput`]) and
    /// the processing keys side by side, so unknown keys are refused by hand against both
    /// lists (serde cannot refuse unknown keys through `flatten`).
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
    /// Bound on one POST exchange, in seconds. Default [`DEFAULT_RELAY_TIMEOUT_SECS`].
    pub timeout_secs: Option<u64>,
}

/// `[batch]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most events in one batch. Default [`DEFAULT_BATCH_MAX_EVENTS`].
    pub max_events: Option<u64>,
    /// Most uncompressed bytes in one batch. Default [`DEFAULT_BATCH_MAX_BYTES`].
    pub max_bytes: Option<u64>,
    /// Oldest event may wait this long before its batch is sent, in ms. Default
    /// [`DEFAULT_BATCH_MAX_AGE_MS`].
    pub max_age_ms: Option<u64>,
    /// gzip level of the channel, 0 to [`MAX_COMPRESSION_LEVEL`]. Default
    /// [`DEFAULT_COMPRESSION_LEVEL`].
    pub compression_level: Option<u32>,
}

/// `[fetch]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    /// Bytes per ranged GET (at least [`MIN_PART_BYTES`]); larger objects are read in parts.
    /// Default [`DEFAULT_PART_BYTES`].
    pub part_bytes: Option<u64>,
    /// Ranged GETs in flight per object. Default [`DEFAULT_PARALLEL_PARTS`].
    pub parallel_parts: Option<usize>,
    /// Parts held in memory at once, whole process (bounds download memory to this × part
    /// size). Default [`DEFAULT_MAX_PARTS_IN_FLIGHT`].
    pub max_parts_in_flight: Option<usize>,
}

/// `[collector]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    /// Names this collector in idempotency keys and logs. Default: the hostname.
    pub id: Option<String>,
    /// Most SQS messages being worked on at once, over all inputs. Default
    /// [`DEFAULT_MAX_MESSAGES_IN_FLIGHT`].
    pub max_messages_in_flight: Option<usize>,
    /// How long shutdown waits for in-flight messages, in seconds. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT_SECS`].
    pub shutdown_timeout_secs: Option<u64>,
    /// `host:port` for `GET /metrics`; off when unset.
    pub metrics_address: Option<String>,
    /// Directory for the processed-object ledgers; in memory only when unset.
    pub state_dir: Option<std::path::PathBuf>,
}

/// The input's own keys of one `[[inputs]]` table, before validation: everything but the
/// processing keys, which [`ProcessingTable`] reads from the same table. A plain struct (no
/// `flatten`), so that its key list comes from serde ([`input_keys`]).
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
    /// Ledger entry lifetime, seconds. Default [`DEFAULT_LEDGER_TTL_SECS`].
    pub ledger_ttl_secs: Option<u64>,
    /// Most ledger entries kept, checkpoints included (oldest evicted). Default
    /// [`DEFAULT_LEDGER_MAX_ENTRIES`].
    pub ledger_max_entries: Option<usize>,
    /// Devo: false skips the input. Default [`DEFAULT_ENABLED`].
    pub enabled: Option<bool>,
    /// Devo: short id of this input (1 to 5 characters), used in state names.
    pub short_unique_id: Option<toml::Value>,
    /// Devo: delete messages once confirmed. false is a testing mode. Default
    /// [`DEFAULT_ACK_MESSAGES`].
    pub ack_messages: Option<bool>,
    /// Seconds a received message stays invisible (and is extended by). Range and default:
    /// [`SQS_VISIBILITY_TIMEOUT`].
    pub sqs_visibility_timeout: Option<i64>,
    /// Long-poll wait, seconds. Range and default: [`SQS_WAIT_TIMEOUT`].
    pub sqs_wait_timeout: Option<i64>,
    /// Messages per receive. Range and default: [`SQS_MAX_MESSAGES`].
    pub sqs_max_messages: Option<i64>,
    /// Poll loops on this queue, 1 to [`MAX_POLLERS`]. Default [`DEFAULT_POLLERS`].
    pub pollers: Option<usize>,
    /// Receives after which a failing message is poison. Default: off when the queue has a
    /// redrive policy (its dead-letter queue takes over), else
    /// [`DEFAULT_MAX_RECEIVE_COUNT_WITHOUT_REDRIVE`].
    pub max_receive_count: Option<u32>,
    /// What happens to a poison message: `keep` (left for the dead-letter queue) or
    /// `delete` (after logging it). Default `keep` with a redrive policy, else `delete`.
    pub poison_action: Option<String>,
    /// Devo: process everything, send nothing (a counting dry run). Default
    /// [`DEFAULT_DO_NOT_SEND`].
    pub do_not_send: Option<bool>,
    /// Devo: the SQS body itself is the event (no S3 access). Default [`DEFAULT_DIRECT_MODE`].
    pub direct_mode: Option<bool>,
    /// Devo: also send, per message, one event to `my.app.sqs.message_body` with the body's
    /// md5, message id, receive count and objects (for hunting duplicates). Default
    /// [`DEFAULT_DEBUG_MD5`].
    pub debug_md5: Option<bool>,
}

/// The processing keys of one `[[inputs]]` table (listed in `PROCESSING_KEYS`): how objects
/// are selected, split and tagged. Read through `flatten`, as they always were, so that their
/// errors read the same; the input's own keys in the table are ignored here.
#[derive(Debug, Deserialize)]
pub struct ProcessingTable {
    /// The processing keys.
    #[serde(flatten)]
    pub processing: ProcessingConfig,
}

/// The input's own keys of `[[inputs]]` (the fields of [`RawInput`], as serde reads them).
pub fn input_keys() -> &'static [&'static str] {
    sluice_common::config::field_names::<RawInput>()
}

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
        Settings::parse_with_env(text, origin, &sluice_common::env::process_env)
    }

    /// [`Settings::parse`] with `env` as the source of `${VAR}` values instead of the process
    /// environment.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        };
        let mut value: toml::Value = toml::from_str(text).map_err(parse_error)?;
        sluice_common::env::interpolate_toml(&mut value, env)?;
        let raw: RawConfig = value.try_into().map_err(parse_error)?;
        Settings::validate(raw)
    }

    /// Applies defaults and checks every table, in file order: `[relay]`, `[batch]`,
    /// `[collector]`, then each `[[inputs]]`; the first problem found is the error.
    fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        sluice_channel::client::Endpoint::parse(&raw.relay.url)
            .map_err(|e| invalid("relay.url", e.to_string()))?;
        let relay_timeout =
            RELAY_TIMEOUT_SECS.get(raw.relay.timeout_secs, DEFAULT_RELAY_TIMEOUT_SECS)?;
        let batch = validate_batch(&raw.batch)?;
        let collector_id = validate_collector_id(raw.collector.id)?;
        let max_messages_in_flight = MAX_MESSAGES_IN_FLIGHT.get_usize(
            raw.collector.max_messages_in_flight,
            DEFAULT_MAX_MESSAGES_IN_FLIGHT,
        )?;
        let shutdown_timeout = SHUTDOWN_TIMEOUT_SECS.get(
            raw.collector.shutdown_timeout_secs,
            DEFAULT_SHUTDOWN_TIMEOUT_SECS,
        )?;
        let metrics_address = validate_metrics_address(raw.collector.metrics_address)?;
        validate_state_dir(raw.collector.state_dir.as_deref())?;
        let fetch = fetch_limits(&raw.fetch)?;
        let inputs = validate_inputs(raw.inputs, raw.collector.state_dir.as_deref())?;
        Ok(Settings {
            relay_url: raw.relay.url,
            relay_token: raw.relay.token.map(Secret::new),
            relay_timeout: Duration::from_secs(relay_timeout),
            batch,
            collector_id,
            max_messages_in_flight,
            shutdown_timeout: Duration::from_secs(shutdown_timeout),
            metrics_address,
            fetch,
            inputs,
        })
    }
}

/// `collector.metrics_address`: `host:port` (a name or an address, a numeric port); whether
/// it can be bound is known only at start, whose error names the key too.
fn validate_metrics_address(address: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let ok = address.parse::<std::net::SocketAddr>().is_ok()
        || address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(['[', ']', ':']) && port.parse::<u16>().is_ok()
        });
    if !ok {
        return Err(invalid(
            "collector.metrics_address",
            format!("{address:?} is not host:port"),
        ));
    }
    Ok(Some(address))
}

/// `collector.state_dir`: not empty, and a directory if it exists (it is created otherwise);
/// an error opening a ledger in it at start names the key too.
fn validate_state_dir(dir: Option<&Path>) -> Result<(), ConfigError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    if dir.as_os_str().is_empty() {
        return Err(invalid("collector.state_dir", "is empty"));
    }
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(invalid(
            "collector.state_dir",
            format!("{} is not a directory", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// `[batch]`: each value within its range.
fn validate_batch(raw: &RawBatch) -> Result<BatchSettings, ConfigError> {
    Ok(BatchSettings {
        max_events: BATCH_MAX_EVENTS.get(raw.max_events, DEFAULT_BATCH_MAX_EVENTS)?,
        max_bytes: BATCH_MAX_BYTES.get(raw.max_bytes, DEFAULT_BATCH_MAX_BYTES)?,
        max_age: Duration::from_millis(
            BATCH_MAX_AGE_MS.get(raw.max_age_ms, DEFAULT_BATCH_MAX_AGE_MS)?,
        ),
        compression_level: BATCH_COMPRESSION_LEVEL.get(
            raw.compression_level.map(u64::from),
            u64::from(DEFAULT_COMPRESSION_LEVEL),
        )? as u32,
    })
}

/// `collector.id`: as configured, else the hostname with every character an idempotency key
/// cannot hold replaced by `-`; either way it must fit in a key ([`MAX_COLLECTOR_ID_BYTES`]).
fn validate_collector_id(configured: Option<String>) -> Result<String, ConfigError> {
    let collector_id = match configured {
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
            .take(MAX_COLLECTOR_ID_BYTES)
            .collect(),
    };
    if collector_id.len() > MAX_COLLECTOR_ID_BYTES
        || !sluice_channel::wire::validate_idempotency_key(&collector_id)
    {
        return Err(invalid(
            "collector.id",
            format!("use 1 to {MAX_COLLECTOR_ID_BYTES} characters of A-Z a-z 0-9 . _ : -"),
        ));
    }
    Ok(collector_id)
}

/// `[fetch]`: each value within its range; the part size raised to [`MIN_PART_BYTES`].
fn fetch_limits(raw: &RawFetch) -> Result<FetchLimits, ConfigError> {
    Ok(FetchLimits {
        part_bytes: PART_BYTES
            .get(raw.part_bytes, DEFAULT_PART_BYTES)?
            .max(MIN_PART_BYTES),
        parallel_parts: PARALLEL_PARTS.get_usize(raw.parallel_parts, DEFAULT_PARALLEL_PARTS)?,
        max_parts_in_flight: MAX_PARTS_IN_FLIGHT
            .get_usize(raw.max_parts_in_flight, DEFAULT_MAX_PARTS_IN_FLIGHT)?,
    })
}

/// Every `[[inputs]]` table: names unique (a default name is `input-N`), disabled inputs
/// skipped (logged), and at least one left.
fn validate_inputs(
    tables: Vec<toml::Table>,
    state_dir: Option<&Path>,
) -> Result<Vec<InputSettings>, ConfigError> {
    let mut inputs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, table) in tables.into_iter().enumerate() {
        let table_name = format!("inputs[{i}]");
        let (input, processing) = read_input_table(&table_name, table)?;
        let name = input.name.clone().unwrap_or_else(|| format!("input-{i}"));
        if !names.insert(name.clone()) {
            return Err(invalid(
                table_name,
                format!("duplicate input name {name:?}"),
            ));
        }
        if !input.enabled.unwrap_or(DEFAULT_ENABLED) {
            tracing::info!(input = %name, "input disabled (enabled = false), skipped");
            continue;
        }
        inputs.push(validate_input(&name, input, processing, state_dir)?);
    }
    if inputs.is_empty() {
        return Err(invalid("inputs", "no enabled [[inputs]]"));
    }
    Ok(inputs)
}

/// One `[[inputs]]` table (`table_name` is `inputs[N]`, for errors): every key must be the
/// input's own ([`input_keys`]) or a processing key; then both halves are read from it.
fn read_input_table(
    table_name: &str,
    table: toml::Table,
) -> Result<(RawInput, ProcessingConfig), ConfigError> {
    let own = input_keys();
    for key in table.keys() {
        if !own.contains(&key.as_str()) && !PROCESSING_KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                table: table_name.to_string(),
                key: key.clone(),
            });
        }
    }
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        path: table_name.to_string(),
        message: e.to_string(),
    };
    let table = toml::Value::Table(table);
    let input: RawInput = table.clone().try_into().map_err(parse_error)?;
    let ProcessingTable { processing } = table.try_into().map_err(parse_error)?;
    Ok((input, processing))
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
        agreed: &crate::delivery::limits::Agreed,
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

/// `range.key` of input `input`: the default when unset; refused outside SQS's range, warned
/// about outside Devo's narrower one.
fn ranged(input: &str, range: SqsRange, value: Option<i64>) -> Result<i64, ConfigError> {
    let SqsRange {
        key,
        default,
        sqs,
        devo,
    } = range;
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

/// One enabled input named `name`: checks run in this order, the first failure is the error:
/// queue URL, SQS numbers, static keys, `short_unique_id`, processing, poison settings.
fn validate_input(
    name: &str,
    input: RawInput,
    processing: ProcessingConfig,
    state_dir: Option<&Path>,
) -> Result<InputSettings, ConfigError> {
    let field = |key: &str| format!("inputs.{name}.{key}");
    if !input.base_url.starts_with("http://") && !input.base_url.starts_with("https://") {
        return Err(invalid(
            field("base_url"),
            "must be the queue URL (https://sqs…)",
        ));
    }
    let visibility = ranged(name, SQS_VISIBILITY_TIMEOUT, input.sqs_visibility_timeout)?;
    let wait = ranged(name, SQS_WAIT_TIMEOUT, input.sqs_wait_timeout)?;
    let max_messages = ranged(name, SQS_MAX_MESSAGES, input.sqs_max_messages)?;
    let static_keys = static_keys(input.aws_access_key_id, input.aws_secret_access_key, &field)?;
    let short_id = short_unique_id(input.short_unique_id.as_ref(), &field)?;
    let ledger = LedgerSettings {
        path: state_dir.map(|dir| {
            dir.join(ledger_namespace(name, short_id))
                .join("objects.ledger")
        }),
        ttl: Duration::from_secs(LEDGER_TTL_SECS.check(
            &field(LEDGER_TTL_SECS.key),
            input.ledger_ttl_secs,
            DEFAULT_LEDGER_TTL_SECS,
        )?),
        max_entries: LEDGER_MAX_ENTRIES.check(
            &field(LEDGER_MAX_ENTRIES.key),
            input.ledger_max_entries.map(|v| v as u64),
            DEFAULT_LEDGER_MAX_ENTRIES as u64,
        )? as usize,
    };
    let processing = processing
        .resolve(sluice_channel::wire::MAX_TAG_BYTES)
        .map_err(|e| invalid(format!("inputs.{name}"), e.to_string()))?;
    let poison_action = poison_action(input.poison_action.as_deref(), &field)?;
    if let Some(n) = input.max_receive_count {
        MAX_RECEIVE_COUNT.check(&field(MAX_RECEIVE_COUNT.key), Some(u64::from(n)), 0)?;
    }
    let pollers = POLLERS.check(
        &field(POLLERS.key),
        input.pollers.map(|v| v as u64),
        DEFAULT_POLLERS as u64,
    )? as usize;
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
        ack_messages: input.ack_messages.unwrap_or(DEFAULT_ACK_MESSAGES),
        visibility_timeout: Duration::from_secs(visibility as u64),
        wait_time: Duration::from_secs(wait as u64),
        max_messages: max_messages as i32,
        pollers: pollers.clamp(1, MAX_POLLERS),
        max_receive_count: input.max_receive_count,
        poison_action,
        do_not_send: input.do_not_send.unwrap_or(DEFAULT_DO_NOT_SEND),
        ledger,
        direct_mode: input.direct_mode.unwrap_or(DEFAULT_DIRECT_MODE),
        debug_md5: input.debug_md5.unwrap_or(DEFAULT_DEBUG_MD5),
        processing,
    })
}

/// Static AWS keys: both or neither (`field` names a key of the input, for errors).
fn static_keys(
    id: Option<String>,
    secret: Option<String>,
    field: &dyn Fn(&str) -> String,
) -> Result<Option<(String, Secret)>, ConfigError> {
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((id, Secret::new(secret)))),
        (None, None) => Ok(None),
        _ => Err(invalid(
            field("aws_access_key_id"),
            "aws_access_key_id and aws_secret_access_key go together",
        )),
    }
}

/// Devo's `short_unique_id`, written as a string or a bare number: 1 to 5 characters that are
/// safe in a path component (it names the input's ledger directory).
fn short_unique_id(
    value: Option<&toml::Value>,
    field: &dyn Fn(&str) -> String,
) -> Result<Option<String>, ConfigError> {
    let Some(id) = value else {
        return Ok(None);
    };
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
    Ok(Some(text))
}

/// The directory under `collector.state_dir` that holds an input's ledger: its
/// `short_unique_id`, else its name with every character unsafe in a path component
/// replaced by `_`.
fn ledger_namespace(name: &str, short_id: Option<String>) -> String {
    short_id.unwrap_or_else(|| {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    })
}

/// `poison_action`: `keep`, `delete`, or unset (decided later from the redrive policy).
fn poison_action(
    value: Option<&str>,
    field: &dyn Fn(&str) -> String,
) -> Result<Option<PoisonAction>, ConfigError> {
    match value {
        None => Ok(None),
        Some("keep") => Ok(Some(PoisonAction::Keep)),
        Some("delete") => Ok(Some(PoisonAction::Delete)),
        Some(o) => Err(invalid(
            field("poison_action"),
            format!("{o:?}: use keep or delete"),
        )),
    }
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

    /// Each reported case, and each key's bounds: refused at load, the error naming the key
    /// (never a panic later in a semaphore or a clock).
    #[test]
    fn every_numeric_key_is_range_checked_naming_the_key() {
        let huge = "4611686018427387904"; // 2^62: above tokio's semaphore maximum
        let tables = [
            ("collector", "max_messages_in_flight", huge),
            ("fetch", "max_parts_in_flight", huge),
            ("fetch", "parallel_parts", huge),
            ("fetch", "part_bytes", huge),
            ("relay", "timeout_secs", "0"),
            ("relay", "timeout_secs", huge),
            ("batch", "max_events", "0"),
            ("batch", "max_bytes", "0"),
            ("batch", "max_age_ms", huge),
            ("batch", "compression_level", "10"),
            ("collector", "max_messages_in_flight", "0"),
            ("collector", "shutdown_timeout_secs", huge),
            ("fetch", "max_parts_in_flight", "0"),
        ];
        for (table, key, value) in tables {
            let text = if table == "relay" {
                MINIMAL.replace("[relay]\n", &format!("[relay]\n{key} = {value}\n"))
            } else {
                format!("[{table}]\n{key} = {value}\n{MINIMAL}")
            };
            let err = Settings::parse(&text, "t").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{table}.{key}: {value} is outside")),
                "{table}.{key} = {value}: {err}"
            );
        }
        for (key, value) in [
            ("ledger_ttl_secs", huge),
            ("ledger_ttl_secs", "0"),
            ("ledger_max_entries", huge),
            ("ledger_max_entries", "0"),
            ("pollers", huge),
            ("max_receive_count", "0"),
            ("max_receive_count", "1001"),
        ] {
            let text = format!("{MINIMAL}{key} = {value}\n");
            let err = Settings::parse(&text, "t").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("inputs.cloudtrail.{key}: {value} is outside")),
                "{key} = {value}: {err}"
            );
        }
        // The bounds themselves are accepted.
        for range in RANGES.iter().filter(|r| r.key.contains('.')) {
            let (table, key) = range.key.split_once('.').unwrap();
            for v in [range.min, range.max] {
                let text = if table == "relay" {
                    MINIMAL.replace("[relay]\n", &format!("[relay]\n{key} = {v}\n"))
                } else {
                    format!("[{table}]\n{key} = {v}\n{MINIMAL}")
                };
                Settings::parse(&text, "t")
                    .unwrap_or_else(|e| panic!("{} = {v} refused: {e}", range.key));
            }
        }
        let s = Settings::parse(&format!("{MINIMAL}pollers = 1000\n"), "t").unwrap();
        assert_eq!(s.inputs[0].pollers, MAX_POLLERS, "lowered, as documented");
    }

    #[test]
    fn metrics_address_and_state_dir_errors_name_the_key() {
        for bad in [
            "9100",
            "nohost",
            ":9100",
            "host:port",
            "host:99999",
            "[::1:9100",
        ] {
            let text = format!("[collector]\nmetrics_address = \"{bad}\"\n{MINIMAL}");
            let err = Settings::parse(&text, "t").unwrap_err().to_string();
            assert!(
                err.starts_with("collector.metrics_address: "),
                "{bad}: {err}"
            );
        }
        for good in ["127.0.0.1:9100", "localhost:0", "[::1]:9100"] {
            let text = format!("[collector]\nmetrics_address = \"{good}\"\n{MINIMAL}");
            Settings::parse(&text, "t").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        for bad in [String::new(), file.display().to_string()] {
            let text = format!("[collector]\nstate_dir = \"{bad}\"\n{MINIMAL}");
            let err = Settings::parse(&text, "t").unwrap_err().to_string();
            assert!(err.starts_with("collector.state_dir: "), "{bad:?}: {err}");
        }
        // Missing is fine: it is created at start.
        let text = format!(
            "[collector]\nstate_dir = \"{}\"\n{MINIMAL}",
            dir.path().join("new").display()
        );
        Settings::parse(&text, "t").unwrap();
        // At start, the errors name the key too.
        let e = crate::pipeline::StartError::Metrics {
            address: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(
            e.to_string().starts_with("collector.metrics_address: "),
            "{e}"
        );
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
        use crate::delivery::limits::Agreed;
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
        assert!(crate::delivery::limits::gzip_bound(s.batch.max_bytes) <= 16 << 20);
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
    fn input_keys_come_from_raw_input_and_are_not_processing_keys() {
        let keys = input_keys();
        // Empty would mean serde no longer reads `RawInput` as a plain struct (a `flatten`
        // crept in): every input key would then be refused as unknown.
        assert!(
            keys.contains(&"base_url") && keys.contains(&"debug_md5"),
            "{keys:?}"
        );
        for key in keys {
            assert!(
                !PROCESSING_KEYS.contains(key),
                "`{key}` is both an input key and a processing key"
            );
        }
    }

    /// A file of the repository (README.md, config/…).
    fn repo_file(relative: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    /// `text` with every commented-out setting (`# key = value`) switched on.
    fn uncomment_settings(text: &str) -> String {
        text.lines()
            .map(|line| {
                let rest = line.strip_prefix("# ").unwrap_or(line);
                let is_setting = rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
                if is_setting {
                    rest
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shipped_example_configs_validate() {
        let dummy_env = |_: &str| Some("dummy".to_string());
        let mut checked = Vec::new();
        // config/examples/ holds whole collector configs for one kind of source each.
        let files = ["config", "config/examples"]
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(repo_file(dir)).unwrap())
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file());
        for path in files {
            let file = path
                .strip_prefix(repo_file("config"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // `relay*.toml` are the relay's examples, checked by the relay's own tests.
            if !file.ends_with(".toml") || file.starts_with("relay") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (variant, text) in [
                ("as shipped", text.clone()),
                ("uncommented", uncomment_settings(&text)),
            ] {
                if let Err(e) = Settings::parse_with_env(&text, &file, &dummy_env) {
                    panic!("config/{file} ({variant}): {e}");
                }
            }
            checked.push(file);
        }
        for expected in [
            "collector.toml",
            "examples/java-stacktrace.toml",
            "examples/msk-broker.toml",
        ] {
            assert!(checked.contains(&expected.to_string()), "{checked:?}");
        }
    }

    /// The collector's configuration tables in README.md: each key (`relay.url`, `base_url`)
    /// with its default cell.
    fn readme_defaults() -> std::collections::BTreeMap<String, String> {
        let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
        let section = readme
            .split("### Collector")
            .nth(1)
            .and_then(|rest| rest.split("### Relay").next())
            .expect("README.md has a \"### Collector\" section before \"### Relay\"");
        let mut rows = std::collections::BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            for key in cells[1].split(", ") {
                rows.insert(key.trim_matches('`').to_string(), cells[2].to_string());
            }
        }
        rows
    }

    #[test]
    fn readme_lists_every_key_with_the_defaults_used_here() {
        let rows = readme_defaults();
        let tables = [
            ("relay", sluice_common::config::field_names::<RawRelay>()),
            ("batch", sluice_common::config::field_names::<RawBatch>()),
            (
                "collector",
                sluice_common::config::field_names::<RawCollector>(),
            ),
            ("fetch", sluice_common::config::field_names::<RawFetch>()),
        ];
        for (table, keys) in tables {
            assert!(!keys.is_empty(), "[{table}]");
            for key in keys {
                let key = format!("{table}.{key}");
                assert!(rows.contains_key(&key), "README.md does not list `{key}`");
            }
        }
        for key in input_keys() {
            assert!(
                rows.contains_key(*key),
                "README.md does not list inputs' `{key}`"
            );
        }
        let defaults: &[(&str, &dyn ToString)] = &[
            ("relay.timeout_secs", &DEFAULT_RELAY_TIMEOUT_SECS),
            ("batch.max_events", &DEFAULT_BATCH_MAX_EVENTS),
            ("batch.max_bytes", &DEFAULT_BATCH_MAX_BYTES),
            ("batch.max_age_ms", &DEFAULT_BATCH_MAX_AGE_MS),
            ("batch.compression_level", &DEFAULT_COMPRESSION_LEVEL),
            (
                "collector.max_messages_in_flight",
                &DEFAULT_MAX_MESSAGES_IN_FLIGHT,
            ),
            (
                "collector.shutdown_timeout_secs",
                &DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            ),
            ("fetch.part_bytes", &DEFAULT_PART_BYTES),
            ("fetch.parallel_parts", &DEFAULT_PARALLEL_PARTS),
            ("fetch.max_parts_in_flight", &DEFAULT_MAX_PARTS_IN_FLIGHT),
            ("enabled", &DEFAULT_ENABLED),
            ("ack_messages", &DEFAULT_ACK_MESSAGES),
            (
                "sqs_visibility_timeout",
                &DEFAULT_SQS_VISIBILITY_TIMEOUT_SECS,
            ),
            ("sqs_wait_timeout", &DEFAULT_SQS_WAIT_TIMEOUT_SECS),
            ("sqs_max_messages", &DEFAULT_SQS_MAX_MESSAGES),
            ("ledger_ttl_secs", &DEFAULT_LEDGER_TTL_SECS),
            ("ledger_max_entries", &DEFAULT_LEDGER_MAX_ENTRIES),
            ("pollers", &DEFAULT_POLLERS),
            ("do_not_send", &DEFAULT_DO_NOT_SEND),
            ("direct_mode", &DEFAULT_DIRECT_MODE),
            ("debug_md5", &DEFAULT_DEBUG_MD5),
        ];
        for (key, default) in defaults {
            assert_eq!(
                rows[*key],
                default.to_string(),
                "README.md's default of `{key}`"
            );
        }
        let poison = &rows["max_receive_count"];
        assert!(
            poison.ends_with(&format!("else {DEFAULT_MAX_RECEIVE_COUNT_WITHOUT_REDRIVE}")),
            "README.md's default of `max_receive_count`: {poison}"
        );
    }

    #[test]
    fn bad_tag() {
        let text = MINIMAL.replace("cloud.aws.cloudtrail.events", "bad tag");
        assert!(Settings::parse(&text, "t").is_err());
    }
}
