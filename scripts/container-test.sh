#!/usr/bin/env bash
# Runs the container end-to-end tests (tests/containers/): builds the images locally with
# scripts/images.sh (sluice:local, sluice-moto:local; nothing is pulled), builds the mutual-TLS
# test receiver and its image (sluice-test-receiver:local, tests/containers/peer/Dockerfile),
# then runs the suite one test at a time (the Docker engine is shared). Each test prints a
# FIGURES row: lines, duplicates, duplicate ratio, duration, peak memory per container.
# Usage: scripts/container-test.sh [--profile release|dev] [TEST FILTER...]
#   --profile dev reuses the debug binaries `cargo test --workspace` built (scripts/test.sh).
#   SLUICE_SKIP_IMAGES=1 uses the sluice and moto images as they are (a rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
if [ "${1:-}" = --profile ]; then PROFILE="$2"; shift 2; fi

if ! docker info >/dev/null 2>&1; then
  echo "container-test: no Docker engine answers (docker info failed)" >&2
  exit 1
fi
if [ "${SLUICE_SKIP_IMAGES:-}" != 1 ]; then bash scripts/images.sh --profile "$PROFILE"; fi

if [ "$PROFILE" = dev ]; then
  DIR=debug
  # The workspace with its tests: the same features `cargo test --workspace` built with, so
  # only the receiver binary is new.
  cargo build --workspace --tests --bins
else
  DIR=$PROFILE
  cargo build --profile "$PROFILE" -p sluice-testkit --bin sluice-test-receiver
fi
CTX=$(mktemp -d "${TMPDIR:-/tmp}/sluice-peer.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
cp tests/containers/peer/Dockerfile "$CTX/"
cp "target/$DIR/sluice-test-receiver" "$CTX/"
strip "$CTX/sluice-test-receiver"
docker build -q -t "${SLUICE_RECEIVER_IMAGE:-sluice-test-receiver:local}" "$CTX" >/dev/null

# The suite is compiled in the test profile (debug); the images hold the binaries under test.
SLUICE_CONTAINER_TESTS=1 cargo test --workspace --test containers -- --test-threads=1 --nocapture "$@" \
  2>&1 | tee "target/container-test.log"
echo "figures:" >&2
grep '^FIGURES' target/container-test.log >&2 || true
