//! sluice-relay: accepts batches of tagged events over the local channel, keeps them in a
//! crash-safe disk spool and delivers them to Devo (or an in-house relay, stdout, a file).
//!
//! Map of the crate:
//! - [`protocol`]: the channel's wire rules (docs/channel.md), shared with producers;
//! - [`client`]: the producer's side of the channel, used by the collector.

pub mod client;
pub mod protocol;
