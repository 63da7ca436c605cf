//! sluice-bench: the benchmark of the whole sluice pipeline, measured against a roofline.
//!
//! Map of the crate:
//! - [`rng`]: a seeded SplitMix64 generator (the corpus is deterministic, no downloaded data);
//! - [`corpus`]: CloudTrail, VPC flow v2 and CloudWatch-Logs-via-Firehose objects, and one
//!   large object generated streaming, with a manifest of expected events;
//! - [`roofline`]: the unavoidable work on the same corpus, one part at a time;
//! - [`s3serve`]: a minimal ranged-GET object server for the fetch benchmark;
//! - [`report`]: number formatting and tables.
//!
//! The harness parts it shares with the tests come from `sluice-testkit`: moto (S3 + SQS on
//! loopback, buckets wired to queues, uploads), certificates and rustls configurations, the
//! counting mutual-TLS line sink, child processes and /proc CPU and memory readings.
//!
//! The binaries in `src/bin` drive these; `scripts/bench.sh` runs them all.

pub mod corpus;
pub mod report;
pub mod rng;
pub mod roofline;
pub mod s3serve;
