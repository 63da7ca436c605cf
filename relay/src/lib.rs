//! sluice-relay: accepts batches of tagged events over the local channel, keeps them in a
//! crash-safe disk spool and delivers them to Devo (or an in-house relay, stdout, a file).
//!
//! Map of the crate, one module per stage:
//! - [`protocol`]: the channel's wire rules (docs/channel.md), shared with producers;
//! - [`client`]: the producer's side of the channel, used by the collector;
//! - [`config`]: the TOML file, raw and validated;
//! - [`ingest`]: the channel's server side (HTTP/1.1 on TCP or a unix socket);
//! - [`batch`]: streaming decoding and checking of batch bodies;
//! - [`spool`]: the crash-safe segment log with per-output cursors;
//! - [`output`]: delivery (framing, stdout, file, TCP/TLS to Devo or a relay);
//! - [`limit`]: per-output rate limits;
//! - [`metrics`]: counters and the Prometheus exposition;
//! - [`app`]: wiring and shutdown.

pub mod app;
pub mod batch;
pub mod client;
pub mod config;
pub mod ingest;
pub mod limit;
pub mod metrics;
pub mod output;
pub mod protocol;
pub mod spool;
