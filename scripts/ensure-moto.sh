#!/usr/bin/env bash
# Installs moto (S3/SQS/STS emulator) and boto3 into ./.venv unless already there.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION="5.2.5"
if [ -x .venv/bin/moto_server ] && .venv/bin/python -c 'import boto3' 2>/dev/null; then
  exit 0
fi
echo "installing moto $MOTO_VERSION into .venv" >&2
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" boto3
