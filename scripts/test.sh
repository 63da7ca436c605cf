#!/usr/bin/env bash
# Runs every test: installs the AWS emulator (moto, from PyPI) into .venv when it is missing,
# then the whole cargo workspace's tests. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-moto.sh
bash scripts/validate-deploy.sh   # every manifest under deploy/ against the Kubernetes and KEDA schemas
cargo test --workspace "$@"
