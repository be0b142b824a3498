#!/usr/bin/env bash
# Upload throughput (docs/benchmarks.md, "Attachments"): `parley-bench upload` of 1 MiB and 10 MiB
# files by 4 clients at once, closed loop, against the embedded node with the directory store and
# with S3 storage (moto's server mode on loopback). Release build; 3 runs per case; prints one line
# per run and the medians: MB/s of file bytes stored, p99 upload latency, the node's CPU per MB and
# its peak RSS.
#
#   scripts/bench-uploads.sh [directory|s3|both]     # default: both
#
# PARLEY_BENCH_RUNS (3), PARLEY_BENCH_DURATION (20 s measured after 3 s of warm-up),
# PARLEY_BENCH_CONCURRENCY (4).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release
runs=${PARLEY_BENCH_RUNS:-3}
duration=${PARLEY_BENCH_DURATION:-20}
concurrency=${PARLEY_BENCH_CONCURRENCY:-4}
work=/tmp/parley-bench-uploads
port=18495
stores=${1:-both}
[ -x $B/parley ] && [ -x $B/parley-bench ] || { echo "bench-uploads: build first: swift build -c release --traits Kafka,Images" >&2; exit 1; }
mkdir -p $work

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

if [ ! -f $work/seed.json ]; then
  rm -rf $work/seeded
  $B/parley seed --data-dir $work/seeded --users 8 --layout direct --out $work/seed.json >/dev/null
fi

# One run: a fresh copy of the seeded data directory and a node with the given storage settings.
# Prints "MB/s p99_ms cpu_ms_per_MB peak_rss_MB failed".
run_once() {
  local size=$1
  shift
  rm -rf $work/data && cp -r $work/seeded $work/data
  env PARLEY_RATE_LIMITS=false PARLEY_PORT=$port PARLEY_DATA_DIR=$work/data PARLEY_LOG_LEVEL=warning "$@" $B/parley serve >$work/server.log 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fs localhost:$port/ready >/dev/null && break; sleep 0.1; done
  $B/parley-bench upload --url http://127.0.0.1:$port --seed $work/seed.json --size "$size" --concurrency "$concurrency" \
    --duration "$duration" --warmup 3 --server-pid $pid --json $work/report.json >/dev/null 2>&1 || true
  kill -TERM $pid; wait $pid || true
  python3 - $work/report.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mbs, p99 = r["megabytesPerSecond"], r["latency"]["p99"]
cpu, rss = r.get("serverCPUMillisPerMB") or 0, r.get("serverPeakRSSMB") or 0
print(f"{mbs:.1f} {p99:.1f} {cpu:.1f} {rss:.0f} {r['failed']}")
PY
}

measure() {
  local name=$1 size=$2
  shift 2
  : >$work/results
  for r in $(seq "$runs"); do
    line=$(run_once "$size" "$@")
    echo "upload $name size $size run $r: MB/s / p99 ms / node CPU ms per MB / node peak RSS MB / failed: $line"
    echo "$line" >>$work/results
  done
  echo "upload $name size $size MEDIAN: $(cut -d' ' -f1 $work/results | median) MB/s, p99 $(cut -d' ' -f2 $work/results | median) ms," \
    "CPU $(cut -d' ' -f3 $work/results | median) ms/MB, peak RSS $(cut -d' ' -f4 $work/results | median) MB"
}

if [ "$stores" = directory ] || [ "$stores" = both ]; then
  for size in 1048576 10485760; do measure directory $size; done
fi
if [ "$stores" = s3 ] || [ "$stores" = both ]; then
  export PARLEY_SERVICES_DIR=$work/services PARLEY_S3_PORT=59020
  scripts/services.sh start-s3
  curl -sS -o /dev/null -X PUT "http://127.0.0.1:59020/parley-bench"
  for size in 1048576 10485760; do
    measure s3 $size PARLEY_S3_ENDPOINT=http://127.0.0.1:59020 PARLEY_S3_BUCKET=parley-bench PARLEY_S3_ACCESS_KEY_ID=bench \
      PARLEY_S3_SECRET_ACCESS_KEY=bench-secret
  done
  scripts/services.sh stop-s3
fi
