//! sluice, the collector: drains SQS queues that announce S3 objects, turns every object into
//! tagged single-line events and hands them to `sluice-relay` in gzip batches.
//!
//! Map of the crate, folders in the order the data flows:
//! - [`config`]: the TOML file and its validated settings;
//! - [`pipeline`]: wires the stages: poll loops, concurrency, shutdown;
//! - [`queue`]: the SQS side: AWS clients ([`queue::aws`]), one message to its fate
//!   ([`queue::fate`]: heartbeat, delete or retry, poison), deletes of confirmed messages
//!   ([`queue::deleter`]);
//! - [`object`]: one object end to end; streaming GetObject ([`object::fetch`]); objects already
//!   delivered ([`object::ledger`]);
//!   - the bytes themselves (SQS body → object references, decompression, splitting into
//!     tagged events) are the `sluice-formats` crate: `notification`, `decompress`, `processor`;
//! - [`delivery`]: events → gzip batches ([`delivery::batch`]) → relay confirmations
//!   ([`delivery::forward`]), within the caps agreed with the relay ([`delivery::limits`]);
//! - [`telemetry`]: every metric declared once, the typed events that log and count, and the
//!   `/metrics` listener.

pub mod config;
pub mod delivery;
pub mod object;
pub mod pipeline;
pub mod queue;
pub mod telemetry;
