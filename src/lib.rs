//! sluice, the collector: drains SQS queues that announce S3 objects, turns every object into
//! tagged single-line events and hands them to `sluice-relay` in gzip batches.
//!
//! Map of the crate, one module per pipeline stage:
//! - [`config`]: the TOML file and its validated settings;
//! - [`aws`]: SQS and S3 clients per input;
//! - [`pipeline`]: poll loops, concurrency, shutdown;
//! - [`message`]: one SQS message to its fate (heartbeat, delete or retry);
//! - [`notification`]: SQS body → object references (in `sluice-formats`);
//! - [`object`]: one object end to end;
//! - [`fetch`]: streaming GetObject;
//! - [`decompress`]: object bytes → decompressed bytes (by magic bytes; in `sluice-formats`);
//! - [`processor`]: decompressed bytes → tagged events (in `sluice-formats`);
//! - [`batch`]: events → gzip batches;
//! - [`forward`]: batches → relay confirmations (a refused batch re-split, see [`limits`]);
//! - [`limits`]: the caps agreed with the relay, and the re-split of a refused batch;
//! - [`ack`]: deletes of confirmed messages (batched);
//! - [`ledger`]: objects already delivered (optional, cuts duplicates);
//! - [`metrics`]: Prometheus counters.

pub mod ack;
pub mod aws;
pub mod batch;
pub mod config;
pub mod fetch;
pub mod forward;
pub mod ledger;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod object;
pub mod pipeline;

// The format modules live in the `sluice-formats` crate; re-exported so `crate::processor::...`
// and `sluice::decompress::...` keep resolving.
pub use sluice_formats::{decompress, notification, processor};
