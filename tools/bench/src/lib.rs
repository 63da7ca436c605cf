//! sluice-bench: the benchmark of the whole sluice pipeline, measured against a roofline.
//!
//! Map of the crate:
//! - [`rng`]: a seeded SplitMix64 generator (the corpus is deterministic, no downloaded data);
//! - [`corpus`]: CloudTrail, VPC flow v2 and CloudWatch-Logs-via-Firehose objects, and one
//!   large object generated streaming, with a manifest of expected events;
//! - [`pki`] and [`tls`]: certificates made at start with rcgen, rustls configs (ring provider);
//! - [`sink`]: the mutual-TLS line receiver that counts lines and bytes;
//! - [`roofline`]: the unavoidable work on the same corpus, one part at a time;
//! - [`procstat`]: CPU seconds and peak RSS of a process from /proc;
//! - [`moto`]: the S3 + SQS emulator on loopback, buckets wired to queues, uploads;
//! - [`s3serve`]: a minimal ranged-GET object server for the fetch benchmark;
//! - [`report`]: number formatting and tables.
//!
//! The binaries in `src/bin` drive these; `scripts/bench.sh` runs them all.

pub mod corpus;
pub mod moto;
pub mod pki;
pub mod procstat;
pub mod report;
pub mod rng;
pub mod roofline;
pub mod s3serve;
pub mod sink;
pub mod tls;
