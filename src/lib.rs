//! sluice, the collector: drains SQS queues that announce S3 objects, turns every object into
//! tagged single-line events and hands them to `sluice-relay` in gzip batches.
//!
//! Map of the crate, folders in the order the data flows:
//! - [`config`]: the TOML file and its validated settings;
//! - [`pipeline`]: wires the stages: poll loops, concurrency, shutdown;
//! - [`queue`]: the SQS side: AWS clients ([`queue::aws`]), one message to its fate
//!   ([`queue::fate`]: heartbeat, delete or retry, poison), deletes of confirmed messages
//!   ([`queue::deleter`]);
//! - [`notification`]: SQS body → object references;
//! - [`object`]: one object end to end; streaming GetObject ([`object::fetch`]); objects already
//!   delivered ([`object::ledger`]);
//! - [`decompress`]: object bytes → decompressed bytes (by magic bytes);
//! - [`processor`]: decompressed bytes → tagged events;
//! - [`delivery`]: events → gzip batches ([`delivery::batch`]) → relay confirmations
//!   ([`delivery::forward`]), within the caps agreed with the relay ([`delivery::limits`]);
//! - [`telemetry`]: every metric declared once, the typed events that log and count, and the
//!   `/metrics` listener.

pub mod config;
pub mod decompress;
pub mod delivery;
pub mod notification;
pub mod object;
pub mod pipeline;
pub mod processor;
pub mod queue;
pub mod telemetry;
