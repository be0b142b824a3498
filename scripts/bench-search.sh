#!/usr/bin/env bash
# Message search under load (docs/benchmarks.md, "Message features"): 1,000,000 messages of seeded
# history (2,000 users in 1,000 direct conversations of 1,000 messages each), then open-loop
# searches by seeded users over their conversations (`parley-bench search`: one word, two words or a
# prefix, drawn from the history's vocabulary), on embedded SQLite and on PostgreSQL. Release build;
# 3 runs per store; prints one line per run and the medians. The seeded stores are kept between
# invocations (delete $PARLEY_BENCH_DIR to seed again).
#
#   scripts/bench-search.sh [sqlite|postgres|both] [rate]     # default: both, 200 searches/s
#
# PARLEY_BENCH_RUNS (3), PARLEY_BENCH_DURATION (20 s measured after 3 s of warm-up),
# PARLEY_BENCH_DIR (/tmp/parley-bench-search). PostgreSQL runs from Debian's packages on loopback
# port 55499 (scripts/services.sh with its own directory).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release
runs=${PARLEY_BENCH_RUNS:-3}
duration=${PARLEY_BENCH_DURATION:-20}
work=${PARLEY_BENCH_DIR:-/tmp/parley-bench-search}
port=18490
stores=${1:-both}
rate=${2:-200}
[ -x $B/parley ] && [ -x $B/parley-bench ] || { echo "bench-search: build first: swift build -c release" >&2; exit 1; }
mkdir -p "$work"

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

wait_ready() {
  for _ in $(seq 300); do curl -fs "localhost:$port/ready" >/dev/null && return; sleep 0.2; done
  echo "bench-search: the node did not become ready" >&2; exit 1
}

# Runs the searches against the node `pid` serves; prints "p99_ms cpu_us_per_search good/sent".
measure() {
  local pid=$1 seed=$2
  $B/parley-bench search --url "http://127.0.0.1:$port" --seed "$seed" --connections 16 --rate "$rate" --duration "$duration" \
    --warmup 3 --server-pid "$pid" --json "$work/report.json" >/dev/null 2>&1
  python3 - "$work/report.json" "$duration" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, server = r["counts"], r["server"]
# CPU per search over the whole run (warm-up included): the node's mean CPU share times the run's
# length, over the searches sent.
seconds = r["warmupSeconds"] + r["durationSeconds"]
cpu = server["meanCPUPercent"] / 100 * seconds / max(1, c["sent"]) * 1e6 if server else float("nan")
print(f'{r["endToEnd"]["p99"]:.1f} {r["endToEnd"]["p50"]:.1f} {cpu:.0f} {c["delivered"]}/{c["sent"]}')
PY
}

# Serves the seeded store `runs` times (a fresh node each time, with the settings given) and
# measures each run; prints the runs and their medians.
serve_and_measure() {
  local name=$1 seed=$2
  shift 2
  : >"$work/results"
  for r in $(seq "$runs"); do
    env PARLEY_RATE_LIMITS=false PARLEY_PORT=$port PARLEY_LOG_LEVEL=warning "$@" $B/parley serve >"$work/server.log" 2>&1 &
    local pid=$!
    wait_ready
    line=$(measure $pid "$seed")
    kill -TERM $pid; wait $pid || true
    echo "search $name rate $rate run $r: p99 ms / p50 ms / CPU µs per search (the node) / good answers: $line"
    echo "$line" >>"$work/results"
  done
  echo "search $name rate $rate MEDIAN: p99 $(cut -d' ' -f1 "$work/results" | median) ms, p50 $(cut -d' ' -f2 "$work/results" | median) ms, CPU $(cut -d' ' -f3 "$work/results" | median) µs/search"
}

run_sqlite() {
  if [ ! -f "$work/sqlite.json" ]; then
    rm -rf "$work/sqlite"
    echo "seeding SQLite: 1,000,000 messages…" >&2
    $B/parley seed --data-dir "$work/sqlite" --users 2000 --layout direct --messages 1000 --out "$work/sqlite.json.tmp" >&2
    mv "$work/sqlite.json.tmp" "$work/sqlite.json"
  fi
  serve_and_measure sqlite "$work/sqlite.json" PARLEY_DATA_DIR="$work/sqlite"
}

run_postgres() {
  export PARLEY_SERVICES_DIR="$work/services" PARLEY_PG_PORT=55499 PARLEY_REDIS_PORT=56499
  eval "$(scripts/services.sh start)"
  local secret
  secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
  [ -s "$work/jwt-secret" ] || echo "$secret" >"$work/jwt-secret"
  secret=$(cat "$work/jwt-secret")
  if [ ! -f "$work/postgres.json" ]; then
    echo "seeding PostgreSQL: 1,000,000 messages…" >&2
    PARLEY_JWT_SECRET=$secret $B/parley seed --store "$PARLEY_TEST_POSTGRES_URL" --users 2000 --layout direct --messages 1000 \
      --out "$work/postgres.json.tmp" >&2
    mv "$work/postgres.json.tmp" "$work/postgres.json"
  fi
  # What autovacuum does to a table in service: fresh statistics, and the full-text index's pending
  # list merged into the index (right after a bulk load, the first searches otherwise scan it).
  psql -q "$PARLEY_TEST_POSTGRES_URL" -c "VACUUM ANALYZE" >&2
  serve_and_measure postgres "$work/postgres.json" PARLEY_STORE="$PARLEY_TEST_POSTGRES_URL" PARLEY_JWT_SECRET="$secret" \
    PARLEY_DATA_DIR="$work/pg-node"
}

case $stores in
  sqlite) run_sqlite ;;
  postgres) run_postgres ;;
  both) run_sqlite; run_postgres ;;
  *) echo "usage: scripts/bench-search.sh [sqlite|postgres|both] [rate]" >&2; exit 2 ;;
esac
