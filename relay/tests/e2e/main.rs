//! The relay's process-level tests, one test binary: the real `sluice-relay` binary, real
//! sockets, real certificates. Each test uses its own temporary directory (spool, config,
//! address file) and its own ports, and sets no process-wide state, so the tests run side by
//! side.

mod support;

mod channel;
mod confirm;
mod crash;
mod delivery;
mod devo;
mod drain;
mod spool_damage;
