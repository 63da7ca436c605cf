//! The relay's configuration: a raw serde layer that mirrors the TOML file (unknown keys are
//! errors that name the key), `${VAR}` interpolation from the environment in string values, and
//! a validated [`Settings`] layer with every default applied.
//!
//! It reads files and the environment; it opens no socket and touches no spool. Every key and
//! its default is documented in `docs/relay.md`.

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
}

impl std::fmt::Debug for ListenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenSettings")
            .field("address", &self.address)
            .field("address_file", &self.address_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("shutdown_timeout", &self.shutdown_timeout)
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

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_EVENT: u64 = 1024 * 1024;
pub const DEFAULT_SPOOL_MAX: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_SEGMENT: u64 = 16 * 1024 * 1024;
pub const DEFAULT_KEYS_WINDOW: usize = 100_000;
pub const DEFAULT_ZIP_BUFFER: usize = 19_500;
pub const DEFAULT_CONFIRM_BYTES: u64 = 32 * 1024 * 1024;
pub const DEFAULT_CONFIRM_INTERVAL_MS: u64 = 2_000;
pub const DEVO_PORT: u16 = 443;
pub const RELAY_PORT: u16 = 13000;

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

    /// Applies defaults and checks ranges.
    pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        let listen = validate_listen(raw.listen)?;
        let limits = Limits {
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            max_batch_bytes: raw.limits.max_batch_bytes.unwrap_or(DEFAULT_MAX_BATCH),
            max_event_bytes: raw.limits.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT),
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
        // Records carry a u32 length: keep a body well inside it.
        if limits.max_body_bytes > u32::MAX as u64 / 2 {
            return Err(invalid("limits.max_body_bytes", "must be below 2 GiB"));
        }
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
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs.unwrap_or(30)),
    })
}

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
        .unwrap_or_else(|| DEFAULT_SEGMENT.min(max_bytes / 8).max(4096));
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
        retry_after_secs: raw.retry_after_secs.unwrap_or(2).max(1),
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

fn validate_output(o: RawOutput, i: usize) -> Result<OutputSettings, ConfigError> {
    let key = |k: &str| format!("outputs[{i}].{k}");
    let type_name = o
        .kind
        .clone()
        .ok_or_else(|| invalid(key("type"), "is required (stdout, file, devo or relay)"))?;
    // Keys each type accepts beyond the common ones (name, framing, backoff, rate).
    let net_keys: &[&str] = &[
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
    let set: Vec<(&str, bool)> = vec![
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
    ];
    let allowed: Vec<&str> = match type_name.as_str() {
        "stdout" => vec![],
        "file" => vec!["path"],
        "devo" => {
            let mut v = vec!["devo_address"];
            v.extend(net_keys.iter().filter(|k| **k != "tls"));
            v
        }
        "relay" => {
            let mut v = vec!["address"];
            v.extend(net_keys);
            v
        }
        other => {
            return Err(invalid(
                key("type"),
                format!("unknown output type {other:?} (stdout, file, devo or relay)"),
            ))
        }
    };
    for (k, present) in &set {
        if *present && !allowed.contains(k) {
            return Err(invalid(
                key(k),
                format!("is not used by outputs of type {type_name}"),
            ));
        }
    }

    let facility = o.facility.unwrap_or(1);
    if facility > 23 {
        return Err(invalid(key("facility"), "must be 0..=23"));
    }
    let severity = o.severity.unwrap_or(6);
    if severity > 7 {
        return Err(invalid(key("severity"), "must be 0..=7"));
    }
    let zip = o.zip.unwrap_or(false);
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
    let hostname = match o.hostname {
        Some(h) => {
            if h.is_empty() || h.bytes().any(|b| b == b' ' || b.is_ascii_control()) {
                return Err(invalid(
                    key("hostname"),
                    "must be non-empty, without spaces or control bytes",
                ));
            }
            h
        }
        None => sluice_common::host::hostname(),
    };
    let framing = Framing {
        hostname,
        facility,
        severity,
        octet_counting: o.octet_counting.unwrap_or(false),
        zip_buffer,
    };

    let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
    let kind = match type_name.as_str() {
        "stdout" => OutputKind::Stdout,
        "file" => OutputKind::File {
            path: o
                .path
                .clone()
                .ok_or_else(|| invalid(key("path"), "is required for type file"))?,
        },
        "devo" | "relay" => {
            let is_devo = type_name == "devo";
            let (addr_key, address, default_port) = if is_devo {
                ("devo_address", o.devo_address.clone(), DEVO_PORT)
            } else {
                ("address", o.address.clone(), RELAY_PORT)
            };
            let address = address.ok_or_else(|| {
                invalid(key(addr_key), format!("is required for type {type_name}"))
            })?;
            let (host, port) =
                with_default_port(&address, default_port).map_err(|m| invalid(key(addr_key), m))?;
            let tls_on = is_devo || o.tls.unwrap_or(false);
            let tls = if tls_on {
                let chain_filename = o.chain_filename.clone().ok_or_else(|| {
                    invalid(key("chain_filename"), "is required (the CA chain to trust)")
                })?;
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
                Some(TlsSettings {
                    chain_filename,
                    cert_filename: o.cert_filename.clone(),
                    key_filename: o.key_filename.clone(),
                    verify_hostname: o.verify_hostname.unwrap_or(true),
                    server_name: o.server_name.clone().unwrap_or_else(|| host.clone()),
                })
            } else {
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
                None
            };
            let connections = o.connections.unwrap_or(1);
            if !(1..=64).contains(&connections) {
                return Err(invalid(key("connections"), "must be 1..=64"));
            }
            let confirm_bytes = o.confirm_bytes.unwrap_or(DEFAULT_CONFIRM_BYTES);
            if confirm_bytes == 0 {
                return Err(invalid(key("confirm_bytes"), "must be at least 1"));
            }
            let confirm_interval = ms(o.confirm_interval_ms, DEFAULT_CONFIRM_INTERVAL_MS);
            if confirm_interval.is_zero() {
                return Err(invalid(key("confirm_interval_ms"), "must be at least 1"));
            }
            let host_port = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            OutputKind::Net(Box::new(NetSettings {
                address: host_port,
                tls,
                connections,
                connect_timeout: ms(o.connect_timeout_ms, 30_000),
                handshake_timeout: ms(o.handshake_timeout_ms, 30_000),
                write_timeout: ms(o.write_timeout_ms, 30_000),
                close_timeout: ms(o.close_timeout_ms, 5_000),
                tls_settle: ms(o.tls_settle_ms, 250),
                idle_reconnect: Duration::from_secs(o.idle_reconnect_secs.unwrap_or(30)),
                max_connection_age: Duration::from_secs(o.max_connection_age_secs.unwrap_or(3600)),
                confirm_bytes,
                confirm_interval,
            }))
        }
        _ => unreachable!("type checked above"),
    };
    let backoff_initial = ms(o.backoff_initial_ms, 500);
    let backoff_max = ms(o.backoff_max_ms, 60_000);
    if backoff_initial.is_zero() || backoff_max < backoff_initial {
        return Err(invalid(
            key("backoff_max_ms"),
            "backoff_initial_ms must be >= 1 and <= backoff_max_ms",
        ));
    }
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
    Ok(OutputSettings {
        name: o.name.clone().unwrap_or_else(|| type_name.clone()),
        type_name,
        kind,
        framing,
        backoff_initial,
        backoff_max,
        rate: RateSettings {
            max_events_per_sec: o.max_events_per_sec,
            max_bytes_per_sec: o.max_bytes_per_sec,
            burst_events: o.burst_events,
            burst_bytes: o.burst_bytes,
        },
    })
    .and_then(|s| {
        if s.name.is_empty()
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            Err(invalid(key("name"), "must be 1 or more of [A-Za-z0-9_.-]"))
        } else {
            Ok(s)
        }
    })
}

#[cfg(test)]
mod tests {
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
    fn ports() {
        assert_eq!(with_default_port("h", 1).unwrap(), ("h".into(), 1));
        assert_eq!(with_default_port("h:2", 1).unwrap(), ("h".into(), 2));
        assert_eq!(with_default_port("[::1]:3", 1).unwrap(), ("::1".into(), 3));
        assert_eq!(with_default_port("::1", 1).unwrap(), ("::1".into(), 1));
        assert!(with_default_port("h:x", 1).is_err());
    }
}
