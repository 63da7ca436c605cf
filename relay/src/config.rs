//! The relay's configuration: a raw serde layer that mirrors the TOML file (unknown keys are
//! errors that name the key), `${VAR}` interpolation from the environment in string values, and
//! a validated [`Settings`] layer with every default applied.
//!
//! It reads files and the environment; it opens no socket and touches no spool. Every default
//! is a `DEFAULT_…` constant at the top of this file; every key and its default is documented
//! in `docs/relay.md` (a test keeps the two in step).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {0}")]
    Env(#[from] sluice_common::env::InterpolateError),
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults and bounds: each written once, here; docs/relay.md lists the same values for users,
// and a test below checks that the two agree.
// ---------------------------------------------------------------------------------------------

/// `listen.address`: loopback, port 7700.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// `listen.shutdown_timeout_secs`: how long requests, then outputs, may take to finish on
/// SIGTERM, in seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// `listen.drain_timeout_secs`: 0, no drain: on SIGTERM undelivered batches stay in the spool
/// for the next start.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 0;
/// `limits.max_body_bytes`: compressed body of one POST, 16 MiB.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// Highest accepted `limits.max_body_bytes`: spool records carry a u32 length, so a body
/// stays well inside it (below 2 GiB).
pub const MAX_MAX_BODY: u64 = u32::MAX as u64 / 2;
/// `limits.max_batch_bytes`: decompressed batch, 64 MiB.
pub const DEFAULT_MAX_BATCH: u64 = 64 * 1024 * 1024;
/// `limits.max_event_bytes`: one message, 1 MiB.
pub const DEFAULT_MAX_EVENT: u64 = 1024 * 1024;
/// `spool.max_bytes`: total size of the segment files, 1 GiB.
pub const DEFAULT_SPOOL_MAX: u64 = 1024 * 1024 * 1024;
/// `spool.segment_bytes`: 16 MiB, or an eighth of `spool.max_bytes` if that is smaller.
pub const DEFAULT_SEGMENT: u64 = 16 * 1024 * 1024;
/// Floor of the default `spool.segment_bytes` (reached only by spools under 32 KiB).
pub const MIN_DEFAULT_SEGMENT: u64 = 4096;
/// `spool.retry_after_secs`: the `Retry-After` sent with 429 and 503 (at least 1).
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 2;
/// `spool.keys_window`: idempotency keys remembered.
pub const DEFAULT_KEYS_WINDOW: usize = 100_000;
/// `outputs.facility`: 1, "user" (Devo's SDK sends PRI `<14>`).
pub const DEFAULT_FACILITY: u8 = 1;
/// Highest syslog facility.
pub const MAX_FACILITY: u8 = 23;
/// `outputs.severity`: 6, "info".
pub const DEFAULT_SEVERITY: u8 = 6;
/// Highest syslog severity.
pub const MAX_SEVERITY: u8 = 7;
/// `outputs.octet_counting`: plain LF-terminated lines.
pub const DEFAULT_OCTET_COUNTING: bool = false;
/// `outputs.zip`: Devo's compressed mode is off.
pub const DEFAULT_ZIP: bool = false;
/// `outputs.zip_buffer_bytes`: Devo's SDK's buffer size.
pub const DEFAULT_ZIP_BUFFER: usize = 19_500;
/// `outputs.tls` of a `relay` output: plain TCP (a `devo` output is always TLS).
pub const DEFAULT_RELAY_TLS: bool = false;
/// `outputs.verify_hostname`: the server certificate must name `server_name`.
pub const DEFAULT_VERIFY_HOSTNAME: bool = true;
/// `outputs.connections`: connections in an output's pool.
pub const DEFAULT_CONNECTIONS: usize = 1;
/// Most `outputs.connections`.
pub const MAX_CONNECTIONS: usize = 64;
/// `outputs.connect_timeout_ms`: resolve and connect, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 30_000;
/// `outputs.handshake_timeout_ms`: TLS handshake, in milliseconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 30_000;
/// `outputs.write_timeout_ms`: each write and flush, in milliseconds.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// `outputs.close_timeout_ms`: how long the peer may take to answer our close, milliseconds.
pub const DEFAULT_CLOSE_TIMEOUT_MS: u64 = 5_000;
/// `outputs.tls_settle_ms`: after a handshake, how long to wait for a late refusal of our
/// client certificate before writing, in milliseconds.
pub const DEFAULT_TLS_SETTLE_MS: u64 = 250;
/// `outputs.idle_reconnect_secs`: a connection idle longer is replaced (Devo's balancer drops
/// idle connections), in seconds.
pub const DEFAULT_IDLE_RECONNECT_SECS: u64 = 30;
/// `outputs.max_connection_age_secs`: a connection older is replaced, in seconds.
pub const DEFAULT_MAX_CONNECTION_AGE_SECS: u64 = 3600;
/// `outputs.confirm_bytes`: wire bytes awaiting confirmation that make a connection close and
/// confirm, 32 MiB (chosen by measurement, BENCHMARKS.md).
pub const DEFAULT_CONFIRM_BYTES: u64 = 32 * 1024 * 1024;
/// `outputs.confirm_interval_ms`: age of the oldest unconfirmed write that makes a connection
/// close and confirm, in milliseconds.
pub const DEFAULT_CONFIRM_INTERVAL_MS: u64 = 2_000;
/// `outputs.backoff_initial_ms`: first wait after a failed attempt, in milliseconds.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 500;
/// `outputs.backoff_max_ms`: cap of the doubling backoff, in milliseconds.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;
/// Port of `devo_address` when none is given (Devo's cloud collectors).
pub const DEVO_PORT: u16 = 443;
/// Port of a `relay` output's `address` when none is given (the in-house relay's port that
/// forwards tagged events as they are).
pub const RELAY_PORT: u16 = 13000;

// ---------------------------------------------------------------------------------------------
// Which `[[outputs]]` keys each type takes. A test checks that these lists together are exactly
// the fields of `RawOutput`.
// ---------------------------------------------------------------------------------------------

/// Keys every output type accepts: name, framing, backoff and rate.
pub const OUTPUT_COMMON_KEYS: &[&str] = &[
    "type",
    "name",
    "hostname",
    "facility",
    "severity",
    "octet_counting",
    "zip",
    "zip_buffer_bytes",
    "backoff_initial_ms",
    "backoff_max_ms",
    "max_events_per_sec",
    "max_bytes_per_sec",
    "burst_events",
    "burst_bytes",
];

/// Keys of `type = "file"` beyond the common ones.
pub const FILE_OUTPUT_KEYS: &[&str] = &["path"];

/// Keys of the network types beyond the common ones and their address (`devo_address` for
/// `devo`, `address` for `relay`). `devo` takes all but `tls`: it is always TLS.
pub const NET_OUTPUT_KEYS: &[&str] = &[
    "tls",
    "chain_filename",
    "cert_filename",
    "key_filename",
    "verify_hostname",
    "server_name",
    "connections",
    "connect_timeout_ms",
    "handshake_timeout_ms",
    "write_timeout_ms",
    "close_timeout_ms",
    "tls_settle_ms",
    "idle_reconnect_secs",
    "max_connection_age_secs",
    "confirm_bytes",
    "confirm_interval_ms",
];

/// The keys `type_name` takes beyond [`OUTPUT_COMMON_KEYS`]; `None` for an unknown type.
fn type_keys(type_name: &str) -> Option<Vec<&'static str>> {
    match type_name {
        "stdout" => Some(vec![]),
        "file" => Some(FILE_OUTPUT_KEYS.to_vec()),
        "devo" => Some(
            std::iter::once("devo_address")
                .chain(NET_OUTPUT_KEYS.iter().copied().filter(|k| *k != "tls"))
                .collect(),
        ),
        "relay" => Some(
            std::iter::once("address")
                .chain(NET_OUTPUT_KEYS.iter().copied())
                .collect(),
        ),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw layer: exactly the file's shape.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    pub spool: Option<RawSpool>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub outputs: Vec<RawOutput>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: Option<String>,
    pub address_file: Option<PathBuf>,
    pub token: Option<String>,
    pub shutdown_timeout_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub dir: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
    pub retry_after_secs: Option<u64>,
    pub keys_window: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub max_batch_bytes: Option<u64>,
    pub max_event_bytes: Option<u64>,
}

/// One `[[outputs]]` table. Every type's keys live here; validation refuses the keys that the
/// chosen `type` does not use, so a misplaced key is still an error that names it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    // framing
    pub hostname: Option<String>,
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    pub octet_counting: Option<bool>,
    pub zip: Option<bool>,
    pub zip_buffer_bytes: Option<usize>,
    // file
    pub path: Option<PathBuf>,
    // devo / relay
    pub devo_address: Option<String>,
    pub address: Option<String>,
    pub tls: Option<bool>,
    pub chain_filename: Option<PathBuf>,
    pub cert_filename: Option<PathBuf>,
    pub key_filename: Option<PathBuf>,
    pub verify_hostname: Option<bool>,
    pub server_name: Option<String>,
    pub connections: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub handshake_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub close_timeout_ms: Option<u64>,
    pub tls_settle_ms: Option<u64>,
    pub idle_reconnect_secs: Option<u64>,
    pub max_connection_age_secs: Option<u64>,
    pub confirm_bytes: Option<u64>,
    pub confirm_interval_ms: Option<u64>,
    // every type
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub max_events_per_sec: Option<u32>,
    pub max_bytes_per_sec: Option<u32>,
    pub burst_events: Option<u32>,
    pub burst_bytes: Option<u32>,
}

impl RawOutput {
    /// The keys this table sets, in declaration order (every field, by its key).
    fn keys_set(&self) -> Vec<&'static str> {
        let o = self;
        [
            ("type", o.kind.is_some()),
            ("name", o.name.is_some()),
            ("hostname", o.hostname.is_some()),
            ("facility", o.facility.is_some()),
            ("severity", o.severity.is_some()),
            ("octet_counting", o.octet_counting.is_some()),
            ("zip", o.zip.is_some()),
            ("zip_buffer_bytes", o.zip_buffer_bytes.is_some()),
            ("path", o.path.is_some()),
            ("devo_address", o.devo_address.is_some()),
            ("address", o.address.is_some()),
            ("tls", o.tls.is_some()),
            ("chain_filename", o.chain_filename.is_some()),
            ("cert_filename", o.cert_filename.is_some()),
            ("key_filename", o.key_filename.is_some()),
            ("verify_hostname", o.verify_hostname.is_some()),
            ("server_name", o.server_name.is_some()),
            ("connections", o.connections.is_some()),
            ("connect_timeout_ms", o.connect_timeout_ms.is_some()),
            ("handshake_timeout_ms", o.handshake_timeout_ms.is_some()),
            ("write_timeout_ms", o.write_timeout_ms.is_some()),
            ("close_timeout_ms", o.close_timeout_ms.is_some()),
            ("tls_settle_ms", o.tls_settle_ms.is_some()),
            ("idle_reconnect_secs", o.idle_reconnect_secs.is_some()),
            (
                "max_connection_age_secs",
                o.max_connection_age_secs.is_some(),
            ),
            ("confirm_bytes", o.confirm_bytes.is_some()),
            ("confirm_interval_ms", o.confirm_interval_ms.is_some()),
            ("backoff_initial_ms", o.backoff_initial_ms.is_some()),
            ("backoff_max_ms", o.backoff_max_ms.is_some()),
            ("max_events_per_sec", o.max_events_per_sec.is_some()),
            ("max_bytes_per_sec", o.max_bytes_per_sec.is_some()),
            ("burst_events", o.burst_events.is_some()),
            ("burst_bytes", o.burst_bytes.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Settings layer: validated, defaults applied.
// ---------------------------------------------------------------------------------------------

/// Where the channel listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(a) => write!(f, "{a}"),
            ListenAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone)]
pub struct ListenSettings {
    pub address: ListenAddress,
    pub address_file: Option<PathBuf>,
    /// Bearer token; never printed (see the manual `Debug`).
    pub token: Option<String>,
    pub shutdown_timeout: Duration,
    /// On stop, how long outputs may go on delivering until the spool is empty; zero for no
    /// drain (the spool keeps what is left for the next start).
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for ListenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenSettings")
            .field("address", &self.address)
            .field("address_file", &self.address_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub retry_after_secs: u64,
    pub keys_window: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_batch_bytes: u64,
    pub max_event_bytes: u64,
}

/// How events are framed on the wire (DEVO.md).
#[derive(Debug, Clone)]
pub struct Framing {
    pub hostname: String,
    pub facility: u8,
    pub severity: u8,
    pub octet_counting: bool,
    /// `Some(buffer size)` in Devo's compressed "zip" mode.
    pub zip_buffer: Option<usize>,
}

/// TLS material for a network output.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub chain_filename: PathBuf,
    pub cert_filename: Option<PathBuf>,
    pub key_filename: Option<PathBuf>,
    pub verify_hostname: bool,
    /// Name sent as SNI and checked against the certificate; the address's host by default.
    pub server_name: String,
}

/// A TCP (optionally TLS) destination.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// `host:port`
    pub address: String,
    pub tls: Option<TlsSettings>,
    pub connections: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    pub close_timeout: Duration,
    pub tls_settle: Duration,
    pub idle_reconnect: Duration,
    pub max_connection_age: Duration,
    /// A connection is closed and confirmed once this many bytes written on it await
    /// confirmation (output/confirm.rs).
    pub confirm_bytes: u64,
    /// ... or once its oldest unconfirmed write is this old.
    pub confirm_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum OutputKind {
    Stdout,
    File {
        path: PathBuf,
    },
    /// `devo` and `relay` outputs: both are syslog over TCP/TLS; they differ in defaults.
    Net(Box<NetSettings>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub max_events_per_sec: Option<u32>,
    pub max_bytes_per_sec: Option<u32>,
    pub burst_events: Option<u32>,
    pub burst_bytes: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// Unique name; keys the output's spool cursor and its metrics.
    pub name: String,
    /// The configured `type` (`stdout`, `file`, `devo`, `relay`).
    pub type_name: String,
    pub kind: OutputKind,
    pub framing: Framing,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub rate: RateSettings,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: ListenSettings,
    pub spool: SpoolSettings,
    pub limits: Limits,
    pub outputs: Vec<OutputSettings>,
}

impl Settings {
    /// Reads, interpolates and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` (named `path` in errors) with `env` as the variable source.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        sluice_common::env::interpolate_toml(&mut value, env)?;
        let raw = RawConfig::deserialize(value).map_err(|e| parse_err(e.to_string()))?;
        Settings::validate(raw)
    }

    /// Applies defaults and checks ranges, table by table: `[listen]`, `[limits]`, `[spool]`
    /// (sized against the limits), then each `[[outputs]]`; the first problem is the error.
    pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        let listen = validate_listen(raw.listen)?;
        let limits = validate_limits(&raw.limits)?;
        let spool = validate_spool(raw.spool, &limits)?;
        if raw.outputs.is_empty() {
            return Err(invalid("outputs", "at least one [[outputs]] is required"));
        }
        let mut outputs = Vec::new();
        for (i, o) in raw.outputs.into_iter().enumerate() {
            let out = validate_output(o, i)?;
            if outputs.iter().any(|p: &OutputSettings| p.name == out.name) {
                return Err(invalid(
                    format!("outputs[{i}].name"),
                    format!(
                        "two outputs are named {:?}; give each a distinct `name`",
                        out.name
                    ),
                ));
            }
            outputs.push(out);
        }
        Ok(Settings {
            listen,
            spool,
            limits,
            outputs,
        })
    }
}

/// `[listen]`: `ip:port` or `unix:/path`; an empty token means none.
fn validate_listen(raw: RawListen) -> Result<ListenSettings, ConfigError> {
    let text = raw.address.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let address = if let Some(p) = text.strip_prefix("unix:") {
        if p.is_empty() {
            return Err(invalid("listen.address", "unix: needs a path"));
        }
        ListenAddress::Unix(PathBuf::from(p))
    } else {
        ListenAddress::Tcp(text.parse().map_err(|_| {
            invalid(
                "listen.address",
                format!("{text:?} is neither ip:port nor unix:/path"),
            )
        })?)
    };
    let token = raw.token.filter(|t| !t.is_empty());
    Ok(ListenSettings {
        address,
        address_file: raw.address_file,
        token,
        shutdown_timeout: Duration::from_secs(
            raw.shutdown_timeout_secs
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
        ),
        drain_timeout: Duration::from_secs(
            raw.drain_timeout_secs.unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS),
        ),
    })
}

/// `[limits]`: each cap at least 1, a body below [`MAX_MAX_BODY`].
fn validate_limits(raw: &RawLimits) -> Result<Limits, ConfigError> {
    let limits = Limits {
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
        max_batch_bytes: raw.max_batch_bytes.unwrap_or(DEFAULT_MAX_BATCH),
        max_event_bytes: raw.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT),
    };
    for (key, v) in [
        ("limits.max_body_bytes", limits.max_body_bytes),
        ("limits.max_batch_bytes", limits.max_batch_bytes),
        ("limits.max_event_bytes", limits.max_event_bytes),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    if limits.max_body_bytes > MAX_MAX_BODY {
        return Err(invalid("limits.max_body_bytes", "must be below 2 GiB"));
    }
    Ok(limits)
}

/// `[spool]`: required with its `dir`; large enough for a few of the largest bodies, and
/// segments small enough that at least four fit.
fn validate_spool(raw: Option<RawSpool>, limits: &Limits) -> Result<SpoolSettings, ConfigError> {
    let raw = raw.ok_or_else(|| invalid("spool", "the [spool] table with `dir` is required"))?;
    let dir = raw
        .dir
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| invalid("spool.dir", "is required"))?;
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX);
    // A record is the body plus a small header; the spool must hold a few of the largest.
    if max_bytes < 4 * limits.max_body_bytes {
        return Err(invalid(
            "spool.max_bytes",
            format!(
                "{max_bytes} is below 4 x limits.max_body_bytes ({})",
                limits.max_body_bytes
            ),
        ));
    }
    let segment_bytes = raw
        .segment_bytes
        .unwrap_or_else(|| DEFAULT_SEGMENT.min(max_bytes / 8).max(MIN_DEFAULT_SEGMENT));
    if segment_bytes == 0 || segment_bytes > max_bytes / 4 {
        return Err(invalid(
            "spool.segment_bytes",
            format!(
                "must be between 1 and spool.max_bytes / 4 ({})",
                max_bytes / 4
            ),
        ));
    }
    let keys_window = raw.keys_window.unwrap_or(DEFAULT_KEYS_WINDOW);
    if keys_window == 0 {
        return Err(invalid("spool.keys_window", "must be at least 1"));
    }
    Ok(SpoolSettings {
        dir,
        max_bytes,
        segment_bytes,
        retry_after_secs: raw
            .retry_after_secs
            .unwrap_or(DEFAULT_RETRY_AFTER_SECS)
            .max(1),
        keys_window,
    })
}

/// Splits `host:port` / `[v6]:port` / `host`, adding `default_port` when none is given.
pub fn with_default_port(address: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{address:?}: unterminated ["))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{address:?}: bad port"))?,
            None if tail.is_empty() => default_port,
            None => return Err(format!("{address:?}: junk after ]")),
        };
        return Ok((host.to_string(), port));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse()
                .map_err(|_| format!("{address:?}: bad port {port:?}"))?;
            if host.is_empty() {
                return Err(format!("{address:?}: no host"));
            }
            Ok((host.to_string(), port))
        }
        // A bare IPv6 address has colons but no brackets.
        Some(_) => Ok((address.to_string(), default_port)),
        None if address.is_empty() => Err("empty address".to_string()),
        None => Ok((address.to_string(), default_port)),
    }
}

/// One `[[outputs]]` table (the `i`th): checks run in this order, the first failure is the
/// error: type, keys the type does not use, framing, the type's own settings, backoff, rate,
/// name.
fn validate_output(o: RawOutput, i: usize) -> Result<OutputSettings, ConfigError> {
    let key = |k: &str| format!("outputs[{i}].{k}");
    let type_name = o
        .kind
        .clone()
        .ok_or_else(|| invalid(key("type"), "is required (stdout, file, devo or relay)"))?;
    refuse_keys_of_other_types(&o, &type_name, &key)?;
    let framing = validate_framing(&o, &key)?;
    let kind = match type_name.as_str() {
        "stdout" => OutputKind::Stdout,
        "file" => OutputKind::File {
            path: o
                .path
                .clone()
                .ok_or_else(|| invalid(key("path"), "is required for type file"))?,
        },
        "devo" | "relay" => OutputKind::Net(Box::new(validate_net(&o, &type_name, &key)?)),
        _ => unreachable!("type checked above"),
    };
    let (backoff_initial, backoff_max) = validate_backoff(&o, &key)?;
    let rate = validate_rate(&o, &key)?;
    let name = o.name.clone().unwrap_or_else(|| type_name.clone());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(key("name"), "must be 1 or more of [A-Za-z0-9_.-]"));
    }
    Ok(OutputSettings {
        name,
        type_name,
        kind,
        framing,
        backoff_initial,
        backoff_max,
        rate,
    })
}

/// An unknown `type`, or a key that `type_name` does not use (named, so a misplaced key is an
/// error rather than silently ignored). `key` names a key of this output for errors.
fn refuse_keys_of_other_types(
    o: &RawOutput,
    type_name: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let allowed = type_keys(type_name).ok_or_else(|| {
        invalid(
            key("type"),
            format!("unknown output type {type_name:?} (stdout, file, devo or relay)"),
        )
    })?;
    let misplaced = o
        .keys_set()
        .into_iter()
        .find(|k| !OUTPUT_COMMON_KEYS.contains(k) && !allowed.contains(k));
    match misplaced {
        Some(k) => Err(invalid(
            key(k),
            format!("is not used by outputs of type {type_name}"),
        )),
        None => Ok(()),
    }
}

/// The syslog framing: facility and severity in range, the zip buffer only with `zip`, a
/// hostname fit for the header (the machine's by default).
fn validate_framing(o: &RawOutput, key: &dyn Fn(&str) -> String) -> Result<Framing, ConfigError> {
    let facility = o.facility.unwrap_or(DEFAULT_FACILITY);
    if facility > MAX_FACILITY {
        return Err(invalid(
            key("facility"),
            format!("must be 0..={MAX_FACILITY}"),
        ));
    }
    let severity = o.severity.unwrap_or(DEFAULT_SEVERITY);
    if severity > MAX_SEVERITY {
        return Err(invalid(
            key("severity"),
            format!("must be 0..={MAX_SEVERITY}"),
        ));
    }
    let zip = o.zip.unwrap_or(DEFAULT_ZIP);
    if o.zip_buffer_bytes.is_some() && !zip {
        return Err(invalid(key("zip_buffer_bytes"), "needs zip = true"));
    }
    let zip_buffer = if zip {
        let n = o.zip_buffer_bytes.unwrap_or(DEFAULT_ZIP_BUFFER);
        if n == 0 {
            return Err(invalid(key("zip_buffer_bytes"), "must be at least 1"));
        }
        Some(n)
    } else {
        None
    };
    let hostname = match &o.hostname {
        Some(h) => {
            if h.is_empty() || h.bytes().any(|b| b == b' ' || b.is_ascii_control()) {
                return Err(invalid(
                    key("hostname"),
                    "must be non-empty, without spaces or control bytes",
                ));
            }
            h.clone()
        }
        None => sluice_common::host::hostname(),
    };
    Ok(Framing {
        hostname,
        facility,
        severity,
        octet_counting: o.octet_counting.unwrap_or(DEFAULT_OCTET_COUNTING),
        zip_buffer,
    })
}

/// `ms` milliseconds, `default` when unset.
fn millis(ms: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(ms.unwrap_or(default))
}

/// A `devo` or `relay` output (`type_name`): its address with the type's default port, TLS,
/// pool size, confirmation triggers and timeouts.
fn validate_net(
    o: &RawOutput,
    type_name: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<NetSettings, ConfigError> {
    let is_devo = type_name == "devo";
    let (addr_key, address, default_port) = if is_devo {
        ("devo_address", o.devo_address.clone(), DEVO_PORT)
    } else {
        ("address", o.address.clone(), RELAY_PORT)
    };
    let address = address
        .ok_or_else(|| invalid(key(addr_key), format!("is required for type {type_name}")))?;
    let (host, port) =
        with_default_port(&address, default_port).map_err(|m| invalid(key(addr_key), m))?;
    let tls = validate_tls(o, is_devo, &host, key)?;
    let connections = o.connections.unwrap_or(DEFAULT_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS).contains(&connections) {
        return Err(invalid(
            key("connections"),
            format!("must be 1..={MAX_CONNECTIONS}"),
        ));
    }
    let confirm_bytes = o.confirm_bytes.unwrap_or(DEFAULT_CONFIRM_BYTES);
    if confirm_bytes == 0 {
        return Err(invalid(key("confirm_bytes"), "must be at least 1"));
    }
    let confirm_interval = millis(o.confirm_interval_ms, DEFAULT_CONFIRM_INTERVAL_MS);
    if confirm_interval.is_zero() {
        return Err(invalid(key("confirm_interval_ms"), "must be at least 1"));
    }
    let host_port = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(NetSettings {
        address: host_port,
        tls,
        connections,
        connect_timeout: millis(o.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS),
        handshake_timeout: millis(o.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS),
        write_timeout: millis(o.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS),
        close_timeout: millis(o.close_timeout_ms, DEFAULT_CLOSE_TIMEOUT_MS),
        tls_settle: millis(o.tls_settle_ms, DEFAULT_TLS_SETTLE_MS),
        idle_reconnect: Duration::from_secs(
            o.idle_reconnect_secs.unwrap_or(DEFAULT_IDLE_RECONNECT_SECS),
        ),
        max_connection_age: Duration::from_secs(
            o.max_connection_age_secs
                .unwrap_or(DEFAULT_MAX_CONNECTION_AGE_SECS),
        ),
        confirm_bytes,
        confirm_interval,
    })
}

/// TLS of a network output: always for `devo` (with a client certificate: Devo is mutual
/// TLS), with `tls = true` for `relay`. Without TLS, every TLS key is refused by name. The
/// server name defaults to the address's `host`.
fn validate_tls(
    o: &RawOutput,
    is_devo: bool,
    host: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<TlsSettings>, ConfigError> {
    if !is_devo && !o.tls.unwrap_or(DEFAULT_RELAY_TLS) {
        for (k, present) in [
            ("chain_filename", o.chain_filename.is_some()),
            ("cert_filename", o.cert_filename.is_some()),
            ("key_filename", o.key_filename.is_some()),
            ("verify_hostname", o.verify_hostname.is_some()),
            ("server_name", o.server_name.is_some()),
            ("tls_settle_ms", o.tls_settle_ms.is_some()),
        ] {
            if present {
                return Err(invalid(key(k), "needs tls = true"));
            }
        }
        return Ok(None);
    }
    let chain_filename = o
        .chain_filename
        .clone()
        .ok_or_else(|| invalid(key("chain_filename"), "is required (the CA chain to trust)"))?;
    if is_devo && (o.cert_filename.is_none() || o.key_filename.is_none()) {
        return Err(invalid(
            key(if o.cert_filename.is_none() {
                "cert_filename"
            } else {
                "key_filename"
            }),
            "is required: Devo needs a client certificate (mutual TLS)",
        ));
    }
    if o.cert_filename.is_some() != o.key_filename.is_some() {
        return Err(invalid(
            key("cert_filename"),
            "cert_filename and key_filename go together",
        ));
    }
    Ok(Some(TlsSettings {
        chain_filename,
        cert_filename: o.cert_filename.clone(),
        key_filename: o.key_filename.clone(),
        verify_hostname: o.verify_hostname.unwrap_or(DEFAULT_VERIFY_HOSTNAME),
        server_name: o.server_name.clone().unwrap_or_else(|| host.to_string()),
    }))
}

/// The retry backoff: a first wait of at least 1 ms, no longer than the cap.
fn validate_backoff(
    o: &RawOutput,
    key: &dyn Fn(&str) -> String,
) -> Result<(Duration, Duration), ConfigError> {
    let backoff_initial = millis(o.backoff_initial_ms, DEFAULT_BACKOFF_INITIAL_MS);
    let backoff_max = millis(o.backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
    if backoff_initial.is_zero() || backoff_max < backoff_initial {
        return Err(invalid(
            key("backoff_max_ms"),
            "backoff_initial_ms must be >= 1 and <= backoff_max_ms",
        ));
    }
    Ok((backoff_initial, backoff_max))
}

/// The rate limits: each at least 1 when set (unset is no limit), a burst only beside its rate.
fn validate_rate(o: &RawOutput, key: &dyn Fn(&str) -> String) -> Result<RateSettings, ConfigError> {
    for (k, v) in [
        ("max_events_per_sec", o.max_events_per_sec),
        ("max_bytes_per_sec", o.max_bytes_per_sec),
        ("burst_events", o.burst_events),
        ("burst_bytes", o.burst_bytes),
    ] {
        if v == Some(0) {
            return Err(invalid(
                key(k),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
    }
    if o.burst_events.is_some() && o.max_events_per_sec.is_none() {
        return Err(invalid(key("burst_events"), "needs max_events_per_sec"));
    }
    if o.burst_bytes.is_some() && o.max_bytes_per_sec.is_none() {
        return Err(invalid(key("burst_bytes"), "needs max_bytes_per_sec"));
    }
    Ok(RateSettings {
        max_events_per_sec: o.max_events_per_sec,
        max_bytes_per_sec: o.max_bytes_per_sec,
        burst_events: o.burst_events,
        burst_bytes: o.burst_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("t.toml"), &|v| match v {
            "RELAY_TOKEN" => Some("s3cret".into()),
            "DIR" => Some("/tmp/spool".into()),
            _ => None,
        })
    }

    #[test]
    fn minimal_with_defaults() {
        let s = parse("[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\n").unwrap();
        assert_eq!(
            s.listen.address,
            ListenAddress::Tcp("127.0.0.1:7700".parse().unwrap())
        );
        assert_eq!(s.limits.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(s.limits.max_batch_bytes, 64 * 1024 * 1024);
        assert_eq!(s.limits.max_event_bytes, 1024 * 1024);
        assert_eq!(s.spool.keys_window, 100_000);
        assert_eq!(s.outputs[0].name, "stdout");
        assert_eq!(s.outputs[0].framing.facility, 1);
        assert_eq!(s.outputs[0].framing.severity, 6);
        assert!(!s.outputs[0].framing.hostname.is_empty());
    }

    #[test]
    fn interpolation_and_unix() {
        let s = parse(
            "[listen]\naddress = \"unix:/run/r.sock\"\ntoken = \"${RELAY_TOKEN}\"\n\
             [spool]\ndir = \"${DIR}/a\"\n[[outputs]]\ntype = \"stdout\"\nhostname = \"h\"\n",
        )
        .unwrap();
        assert_eq!(s.listen.token.as_deref(), Some("s3cret"));
        assert_eq!(s.spool.dir, PathBuf::from("/tmp/spool/a"));
        assert_eq!(s.listen.address, ListenAddress::Unix("/run/r.sock".into()));
        assert!(!format!("{:?}", s.listen).contains("s3cret"));
    }

    #[test]
    fn missing_var_names_key_and_var() {
        let e = parse("[listen]\ntoken = \"${NOPE}\"\n[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.token") && e.contains("NOPE"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[spool]\ndir = \"/x\"\nfoo = 1\n[[outputs]]\ntype = \"stdout\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("foo"), "{e}");
        let e = parse("[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\nbar = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bar"), "{e}");
    }

    #[test]
    fn misplaced_key_is_named() {
        let e = parse("[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\npath = \"/f\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs[0].path"), "{e}");
    }

    #[test]
    fn devo_output() {
        let s = parse(
            "[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"devo\"\n\
             devo_address = \"collector-eu.devo.io\"\nchain_filename = \"c\"\n\
             cert_filename = \"d.crt\"\nkey_filename = \"d.key\"\n",
        )
        .unwrap();
        match &s.outputs[0].kind {
            OutputKind::Net(n) => {
                assert_eq!(n.address, "collector-eu.devo.io:443");
                let tls = n.tls.as_ref().unwrap();
                assert!(tls.verify_hostname);
                assert_eq!(tls.server_name, "collector-eu.devo.io");
            }
            k => panic!("{k:?}"),
        }
        let e = parse(
            "[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"devo\"\n\
             devo_address = \"h\"\nchain_filename = \"c\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cert_filename"), "{e}");
    }

    #[test]
    fn relay_output_defaults_to_plain_13000() {
        let s =
            parse("[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"relay\"\naddress = \"10.0.0.5\"\n")
                .unwrap();
        match &s.outputs[0].kind {
            OutputKind::Net(n) => {
                assert_eq!(n.address, "10.0.0.5:13000");
                assert!(n.tls.is_none());
                assert_eq!(n.confirm_bytes, DEFAULT_CONFIRM_BYTES);
                assert_eq!(
                    n.confirm_interval,
                    Duration::from_millis(DEFAULT_CONFIRM_INTERVAL_MS)
                );
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn confirm_keys_are_checked() {
        let base = "[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"relay\"\naddress = \"h\"\n";
        let s = parse(&format!(
            "{base}confirm_bytes = 1000\nconfirm_interval_ms = 50\n"
        ))
        .unwrap();
        match &s.outputs[0].kind {
            OutputKind::Net(n) => {
                assert_eq!(n.confirm_bytes, 1000);
                assert_eq!(n.confirm_interval, Duration::from_millis(50));
            }
            k => panic!("{k:?}"),
        }
        let e = parse(&format!("{base}confirm_bytes = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs[0].confirm_bytes"), "{e}");
        let e = parse(&format!("{base}confirm_interval_ms = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs[0].confirm_interval_ms"), "{e}");
        let e = parse("[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\nconfirm_bytes = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs[0].confirm_bytes"), "{e}");
    }

    #[test]
    fn duplicate_names_refused() {
        let e = parse(
            "[spool]\ndir = \"/x\"\n[[outputs]]\ntype = \"stdout\"\n[[outputs]]\ntype = \"stdout\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn output_key_lists_are_exactly_the_fields_of_raw_output() {
        let fields: BTreeSet<&str> = sluice_common::config::field_names::<RawOutput>()
            .iter()
            .copied()
            .collect();
        let lists = [
            OUTPUT_COMMON_KEYS,
            FILE_OUTPUT_KEYS,
            NET_OUTPUT_KEYS,
            &["devo_address", "address"],
        ];
        let mut listed = BTreeSet::new();
        for key in lists.concat() {
            assert!(listed.insert(key), "`{key}` is listed twice");
        }
        assert_eq!(listed, fields);
        for type_name in ["stdout", "file", "devo", "relay"] {
            for key in type_keys(type_name).unwrap() {
                assert!(fields.contains(key), "{type_name}: `{key}`");
            }
        }
    }

    #[test]
    fn keys_set_names_every_field() {
        // Each field alone, with the first value of these that its type takes.
        let samples = [
            toml::Value::Boolean(true),
            toml::Value::Integer(1),
            toml::Value::String("x".into()),
        ];
        for field in sluice_common::config::field_names::<RawOutput>() {
            let raw = samples
                .iter()
                .find_map(|v| {
                    let table = toml::Table::from_iter([(field.to_string(), v.clone())]);
                    RawOutput::deserialize(toml::Value::Table(table)).ok()
                })
                .unwrap_or_else(|| panic!("no sample value fits `{field}`"));
            assert_eq!(raw.keys_set(), [*field]);
        }
        assert!(RawOutput::default().keys_set().is_empty());
    }

    /// A file of the repository (docs/…, config/…).
    fn repo_file(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative)
    }

    #[test]
    fn shipped_example_configs_validate() {
        let dummy_env = |_: &str| Some("dummy".to_string());
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(repo_file("config")).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            // The other examples are the collector's, checked by its own tests.
            if !(file.starts_with("relay") && file.ends_with(".toml")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Also with every commented-out setting (`# key = value`) switched on.
            let uncommented: String = text
                .lines()
                .map(|line| match line.strip_prefix("# ") {
                    Some(rest)
                        if rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                    {
                        format!("{rest}\n")
                    }
                    _ => format!("{line}\n"),
                })
                .collect();
            for (variant, text) in [("as shipped", &text), ("uncommented", &uncommented)] {
                if let Err(e) = Settings::from_toml(text, &path, &dummy_env) {
                    panic!("config/{file} ({variant}): {e}");
                }
            }
            checked.push(file);
        }
        assert!(checked.contains(&"relay.toml".to_string()), "{checked:?}");
    }

    /// The Kubernetes manifests carry their own relay.toml (a block scalar of the ConfigMap):
    /// it must validate too, and drain on stop (a scaled-in pod's volume may not come back).
    #[test]
    fn kubernetes_configmap_relay_config_validates_and_drains() {
        let yaml = std::fs::read_to_string(repo_file("deploy/kubernetes/configmap.yaml")).unwrap();
        let mut lines = yaml.lines().skip_while(|l| l.trim() != "relay.toml: |");
        assert!(lines.next().is_some(), "configmap.yaml has no relay.toml");
        // The block: every line indented by 4, or empty, up to the next key.
        let text: String = lines
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let env = |name: &str| (name == "SLUICE_RELAY_TOKEN").then(|| "t0ken".to_string());
        let settings = Settings::from_toml(&text, Path::new("configmap.yaml"), &env)
            .unwrap_or_else(|e| panic!("deploy/kubernetes/configmap.yaml relay.toml: {e}"));
        assert!(!settings.listen.drain_timeout.is_zero());
        assert_eq!(settings.outputs[0].type_name, "devo");
    }

    /// The rows of docs/relay.md's table(s) under the heading that starts with `heading`: each
    /// key (the backticked names of the first cell) with the first word of its default cell,
    /// backticks and quotes removed.
    fn documented_defaults(heading: &str) -> std::collections::BTreeMap<String, String> {
        let doc = std::fs::read_to_string(repo_file("docs/relay.md")).unwrap();
        let section = doc
            .split("\n### ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("docs/relay.md has no section {heading}"));
        let section = section.split("\n## ").next().unwrap();
        let mut rows = std::collections::BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let default = cells[2].split_whitespace().next().unwrap_or("");
            let default = default.trim_matches(|c| c == '`' || c == '"').to_string();
            for key in cells[1].split('`').skip(1).step_by(2) {
                rows.insert(key.to_string(), default.clone());
            }
        }
        rows
    }

    #[test]
    fn docs_list_every_key_with_the_defaults_used_here() {
        let tables = [
            (
                "`[listen]`",
                sluice_common::config::field_names::<RawListen>(),
            ),
            (
                "`[spool]`",
                sluice_common::config::field_names::<RawSpool>(),
            ),
            (
                "`[limits]`",
                sluice_common::config::field_names::<RawLimits>(),
            ),
            (
                "`[[outputs]]`",
                sluice_common::config::field_names::<RawOutput>(),
            ),
        ];
        for (heading, keys) in tables {
            let rows = documented_defaults(heading);
            assert!(!keys.is_empty(), "{heading}");
            for key in keys {
                assert!(
                    rows.contains_key(*key),
                    "docs/relay.md, {heading}: no `{key}`"
                );
            }
        }
        let check = |heading: &str, defaults: &[(&str, &dyn ToString)]| {
            let rows = documented_defaults(heading);
            for (key, default) in defaults {
                assert_eq!(
                    rows[*key],
                    default.to_string(),
                    "docs/relay.md, {heading} `{key}`"
                );
            }
        };
        check(
            "`[listen]`",
            &[
                ("address", &DEFAULT_LISTEN),
                ("shutdown_timeout_secs", &DEFAULT_SHUTDOWN_TIMEOUT_SECS),
                ("drain_timeout_secs", &DEFAULT_DRAIN_TIMEOUT_SECS),
            ],
        );
        check(
            "`[spool]`",
            &[
                ("max_bytes", &DEFAULT_SPOOL_MAX),
                ("retry_after_secs", &DEFAULT_RETRY_AFTER_SECS),
                ("keys_window", &DEFAULT_KEYS_WINDOW),
            ],
        );
        assert_eq!(
            documented_defaults("`[spool]`")["segment_bytes"],
            format!("min({}", DEFAULT_SEGMENT >> 20),
            "docs/relay.md: the default segment_bytes"
        );
        check(
            "`[limits]`",
            &[
                ("max_body_bytes", &DEFAULT_MAX_BODY),
                ("max_batch_bytes", &DEFAULT_MAX_BATCH),
                ("max_event_bytes", &DEFAULT_MAX_EVENT),
            ],
        );
        check(
            "`[[outputs]]`",
            &[
                ("facility", &DEFAULT_FACILITY),
                ("severity", &DEFAULT_SEVERITY),
                ("octet_counting", &DEFAULT_OCTET_COUNTING),
                ("zip", &DEFAULT_ZIP),
                ("zip_buffer_bytes", &DEFAULT_ZIP_BUFFER),
                ("backoff_initial_ms", &DEFAULT_BACKOFF_INITIAL_MS),
                ("backoff_max_ms", &DEFAULT_BACKOFF_MAX_MS),
                ("tls", &DEFAULT_RELAY_TLS),
                ("verify_hostname", &DEFAULT_VERIFY_HOSTNAME),
                ("connections", &DEFAULT_CONNECTIONS),
                ("connect_timeout_ms", &DEFAULT_CONNECT_TIMEOUT_MS),
                ("handshake_timeout_ms", &DEFAULT_HANDSHAKE_TIMEOUT_MS),
                ("tls_settle_ms", &DEFAULT_TLS_SETTLE_MS),
                ("write_timeout_ms", &DEFAULT_WRITE_TIMEOUT_MS),
                ("close_timeout_ms", &DEFAULT_CLOSE_TIMEOUT_MS),
                ("confirm_bytes", &DEFAULT_CONFIRM_BYTES),
                ("confirm_interval_ms", &DEFAULT_CONFIRM_INTERVAL_MS),
                ("idle_reconnect_secs", &DEFAULT_IDLE_RECONNECT_SECS),
                ("max_connection_age_secs", &DEFAULT_MAX_CONNECTION_AGE_SECS),
            ],
        );
    }

    #[test]
    fn ports() {
        assert_eq!(with_default_port("h", 1).unwrap(), ("h".into(), 1));
        assert_eq!(with_default_port("h:2", 1).unwrap(), ("h".into(), 2));
        assert_eq!(with_default_port("[::1]:3", 1).unwrap(), ("::1".into(), 3));
        assert_eq!(with_default_port("::1", 1).unwrap(), ("::1".into(), 1));
        assert!(with_default_port("h:x", 1).is_err());
    }
}
