//! The collector's end-to-end tests, one test binary: real moto, the real `sluice` and
//! `sluice-relay` binaries. Each test starts its own moto server, uses its own temporary
//! directory and ports, and sets no process-wide state, so the tests run side by side.

mod support;

mod collector;
mod fate;
mod limits;
mod pipeline;
mod shapes;
