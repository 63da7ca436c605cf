//! The container end-to-end tests (issue 12): each service in its own container on private
//! Docker networks made per test, the images built locally by scripts/container-test.sh
//! (sluice:local, sluice-moto:local, sluice-test-receiver:local; SLUICE_IMAGE,
//! SLUICE_MOTO_IMAGE and SLUICE_RECEIVER_IMAGE name others). They run only with
//! SLUICE_CONTAINER_TESTS=1 (otherwise each says why and passes), one at a time
//! (`--test-threads=1`: the machine's Docker is shared). Every test prints a `FIGURES` row
//! (lines, duplicates, peak memory per container, duration) for docs/compose.md.
//!
//! What they do not cover: the image build itself (scripts/images.sh), Kubernetes (deploy/).

mod compose;
mod docker;
mod flow;
mod scale;
mod stack;

/// True when the container tests are asked for; otherwise says why a test does nothing.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("SLUICE_CONTAINER_TESTS").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "{test}: skipped: set SLUICE_CONTAINER_TESTS=1 (scripts/container-test.sh builds the \
             images and does)"
        );
    }
    on
}
