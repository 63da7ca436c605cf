//! sluice, the collector: drains SQS queues that announce S3 objects, turns every object into
//! tagged single-line events and hands them to `sluice-relay` in gzip batches.
//!
//! Map of the crate, one module per pipeline stage:
//! - [`notification`]: SQS body → object references;
//! - [`decompress`]: object bytes → decompressed bytes (by magic bytes);
//! - [`processor`]: decompressed bytes → tagged events.

pub mod decompress;
pub mod notification;
pub mod processor;
