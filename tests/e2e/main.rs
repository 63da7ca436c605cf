//! The collector's end-to-end tests, one test binary: real moto, the real `sluice` and
//! `sluice-relay` binaries. Each test starts its own moto server, uses its own temporary
//! directory and ports, and sets no process-wide state, so the tests run side by side. The
//! one shared thing is the collector library's telemetry registry, which `forward` reads in
//! this process: each of its tests counts under an input name of its own.

mod support;

mod collector;
mod fate;
mod forward;
mod health;
mod limits;
mod multiline;
mod pipeline;
mod s3_errors;
mod shapes;
