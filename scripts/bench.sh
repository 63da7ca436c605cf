#!/usr/bin/env bash
# Runs the whole-pipeline benchmark on loopback and prints its tables (Markdown):
# moto as S3 + SQS, a mutual-TLS line sink standing in for Devo, release builds of sluice and
# sluice-relay, a deterministic generated corpus (CloudTrail, VPC flow, CloudWatch Logs via
# Firehose, one object of 2 GiB uncompressed), the roofline of the same corpus, the light-load
# latency, and the fetch benchmark (one 1 GiB object, single stream against ranged GETs).
#
#   scripts/bench.sh                      # everything (about 15 minutes on 2 cores; ~4 GB disk)
#   BENCH_PHASES=cloudtrail,vpc_flow scripts/bench.sh   # a subset of phases
#   BENCH_MB=200 scripts/bench.sh         # a smaller corpus (MB of raw events per corpus)
#   BENCH_FETCH=0 scripts/bench.sh        # skip the fetch benchmark
#
# Extra arguments go to bench-run (see `target/release/bench-run --help`), e.g.
# `--level 0` for the channel's gzip level. The corpus is kept in $BENCH_DIR/corpus (default
# target/bench) and reused when its seed and size match; results.json and every log land in
# $BENCH_DIR/work.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
BENCH_MB=${BENCH_MB:-1000}
BENCH_CW_MB=${BENCH_CW_MB:-$((BENCH_MB * 3 / 10))}
BENCH_LARGE_MIB=${BENCH_LARGE_MIB:-2048}
BENCH_PHASES=${BENCH_PHASES:-cloudtrail,vpc_flow,cloudwatch,large,latency}
BENCH_FETCH=${BENCH_FETCH:-1}

bash scripts/ensure-moto.sh
echo "building release binaries" >&2
cargo build --release --quiet -p sluice -p sluice-relay -p sluice-bench --bins
BIN=$ROOT/target/release
mkdir -p "$BENCH_DIR"
avail_kb=$(df -Pk "$BENCH_DIR" | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt $((6 * 1024 * 1024)) ]; then
  echo "less than 6 GB free under $BENCH_DIR: the corpus, moto's copies and the spool need it" >&2
  exit 1
fi

kinds=""
for k in cloudtrail vpc_flow cloudwatch large; do
  case ",$BENCH_PHASES," in *",$k,"*) kinds="$kinds,$k" ;; esac
done
if [ -n "$kinds" ]; then
  "$BIN/bench-corpus" --out "$BENCH_DIR/corpus" --kinds "${kinds#,}" --mb "$BENCH_MB" \
    --cloudwatch-mb "$BENCH_CW_MB" --large-mib "$BENCH_LARGE_MIB"
fi
rm -rf "$BENCH_DIR/work"
"$BIN/bench-run" --corpus "$BENCH_DIR/corpus" --work "$BENCH_DIR/work" --bins "$BIN" \
  --repo "$ROOT" --phases "$BENCH_PHASES" "$@"
if [ "$BENCH_FETCH" != 0 ]; then
  echo
  "$BIN/bench-fetch"
fi
