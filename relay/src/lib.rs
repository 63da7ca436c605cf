//! sluice-relay: accepts batches of tagged events over the local channel, keeps them in a
//! crash-safe disk spool and delivers them to Devo (or an in-house relay, stdout, a file).
//!
//! The channel's contract (wire rules, batch decoding, limits, the producers' client) is the
//! `sluice-channel` crate; this crate is its server side and everything behind it.
//!
//! Map of the crate, one module per stage:
//! - [`config`]: the TOML file, raw and validated;
//! - `ingest`: the channel's server side (HTTP/1.1 on TCP or a unix socket);
//! - [`spool`]: the crash-safe segment log with per-output cursors;
//! - [`output`]: delivery (framing, stdout, file, TCP/TLS to Devo or a relay);
//! - `limit`: per-output rate limits;
//! - [`metrics`]: metric declarations, their values, the Prometheus exposition, and the
//!   outcomes that are logged and counted in one call;
//! - [`app`]: wiring and shutdown.
//!
//! Public are only what the binary (`main.rs`), the examples and the benchmarks use: [`app`]
//! to run a relay, [`config`], the [`spool`] handle, [`output::frame::Framer`] and
//! [`metrics::Metrics`]. Everything else is `pub(crate)`.

pub mod app;
pub mod config;
mod ingest;
mod limit;
pub mod metrics;
pub mod output;
pub mod spool;
