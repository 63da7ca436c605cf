#!/usr/bin/env bash
# Runs the whole pipeline locally on defaults: moto as S3 + SQS, a bucket whose new objects
# are announced on a queue, a sample upload, then sluice-relay (stdout output) and sluice.
# The Devo lines appear on stdout; both processes' logs go to $WORK/*.log. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/ensure-moto.sh
cargo build --quiet --workspace --bins
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-demo.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped; logs in $WORK" >&2
}
trap cleanup EXIT
trap 'exit 0' INT TERM

PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RELAY_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
ENDPOINT="http://127.0.0.1:$PORT"
QUEUE_URL=$(.venv/bin/python "$ROOT/scripts/demo_setup.py" "$ENDPOINT")

cat >"$WORK/relay.toml" <<TOML
[listen]
address = "127.0.0.1:$RELAY_PORT"

[spool]
dir = "$WORK/spool"

[[outputs]]
type = "stdout"
TOML
cat >"$WORK/collector.toml" <<TOML
[relay]
url = "http://127.0.0.1:$RELAY_PORT"

[[inputs]]
name = "demo"
base_url = "$QUEUE_URL"
region = "us-east-1"
endpoint_url = "$ENDPOINT"
aws_access_key_id = "testing"
aws_secret_access_key = "testing"
tag = "my.app.sluice.demo"
sqs_wait_timeout = 5
TOML

"$ROOT/target/debug/sluice-relay" --config "$WORK/relay.toml" 2>"$WORK/relay.log" &
PIDS+=($!)
"$ROOT/target/debug/sluice" --config "$WORK/collector.toml" 2>"$WORK/collector.log" &
PIDS+=($!)
echo "sluice demo running (queue $QUEUE_URL); Devo lines follow, Ctrl-C stops" >&2
wait
