//! sluice-channel: the local channel between a producer (the `sluice` collector) and
//! `sluice-relay`, in one place, as docs/channel.md states it. Both sides build on it, so the
//! rules cannot drift apart.
//!
//! Map of the crate:
//! - [`wire`]: paths, headers, the line syntax `TAG SP MESSAGE LF`, tag and key rules;
//! - [`limits`]: the caps a relay announces (`GET /v1/limits`) and their v1 defaults;
//! - [`encode`]: the producer's batch body (gzip lines, built as events arrive);
//! - [`decode`]: the relay's streaming reading and checking of a batch body;
//! - [`client`]: the producer's HTTP side (POST a batch, read the caps, classify answers).
//!
//! It holds no server, TLS, spool or rate limit: those are the relay's.

pub mod client;
pub mod decode;
pub mod encode;
pub mod limits;
pub mod wire;
