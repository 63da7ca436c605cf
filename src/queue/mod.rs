//! The SQS side of the collector: the AWS clients, the message fate (where the delivery
//! guarantee is decided: delete, retry after a backoff, or poison), and the deleter that
//! acknowledges confirmed messages in batches.
//!
//! It does not read objects nor talk to the relay: that is [`crate::object`] and
//! [`crate::delivery`].

pub mod aws;
pub mod deleter;
pub mod fate;
