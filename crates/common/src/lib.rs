//! What the collector (`sluice`) and the relay (`sluice-relay`) share at their edge, kept in
//! one place so the two processes behave alike: logging set-up and the shutdown signal
//! ([`cli`]), `${VAR}` interpolation of configuration files ([`env`]), the machine's hostname
//! ([`host`]), secrets that never print ([`Secret`]), the key lists of configuration structs
//! ([`config`]), metric declarations with their Prometheus exposition ([`telemetry`]) and the
//! `health` subcommand's blocking HTTP probe ([`health`]).
//!
//! It holds no pipeline logic: nothing here knows SQS, S3, the channel or Devo.

pub mod cli;
pub mod config;
pub mod env;
pub mod health;
pub mod host;
mod secret;
pub mod telemetry;

pub use secret::Secret;
