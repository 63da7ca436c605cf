#!/usr/bin/env bash
# Runs every test: installs the AWS emulator (moto, from PyPI) into .venv when it is missing,
# then the whole cargo workspace's tests, then, when a Docker engine answers, the container
# tests (scripts/container-test.sh, on the debug binaries just built; SLUICE_SKIP_CONTAINERS=1
# leaves them out). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-moto.sh
bash scripts/validate-deploy.sh   # every manifest under deploy/ against the Kubernetes and KEDA schemas
cargo test --workspace "$@"
if [ "${SLUICE_SKIP_CONTAINERS:-}" != 1 ] && docker info >/dev/null 2>&1; then
  bash scripts/container-test.sh --profile dev
else
  echo "test.sh: container tests skipped (no Docker engine, or SLUICE_SKIP_CONTAINERS=1)" >&2
fi
