//! The relay side of the collector: events become gzip batches ([`batch`]), batches go to the
//! relay until it confirms them ([`forward`]), cut within the caps agreed with it ([`limits`]).
//!
//! It knows nothing of SQS messages: a confirmation here is what lets [`crate::queue`] delete.

pub mod batch;
pub mod forward;
pub mod limits;
