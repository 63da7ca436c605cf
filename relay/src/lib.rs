//! sluice-relay: accepts batches of tagged events over the local channel, keeps them in a
//! crash-safe disk spool and delivers them to Devo (or an in-house relay, stdout, a file).
//!
//! Map of the crate, one module per stage:
//! - [`config`]: the TOML file, raw and validated;
//! - [`ingest`]: the channel's server side (HTTP/1.1 on TCP or a unix socket);
//! - [`spool`]: the crash-safe segment log with per-output cursors;
//! - [`output`]: delivery (framing, stdout, file, TCP/TLS to Devo or a relay);
//! - [`limit`]: per-output rate limits;
//! - [`metrics`]: counters and the Prometheus exposition;
//! - [`app`]: wiring and shutdown.

pub mod app;
pub mod config;
pub mod ingest;
pub mod limit;
pub mod metrics;
pub mod output;
pub mod spool;
