#!/usr/bin/env bash
# The event stream's benchmarks (docs/benchmarks.md, "Event stream"): T1 with the stream off and on,
# the outbox lag (commit → broker ack) under load, and the relay alone. Release build, embedded
# SQLite, the mock Kafka cluster (scripts/kafka-mock.sh) on the same machine. Prints one line per
# run and the medians.
#
#   scripts/bench-stream.sh t1 [rates…]        # default rates: 1500 2000 2500 3000; 3 runs each, off and on
#   scripts/bench-stream.sh lag [rate]          # default 5000: outbox lag with the stream on, 3 runs
#   scripts/bench-stream.sh relay [events]      # default 200000: parley-bench outbox, 3 runs
#   scripts/bench-stream.sh raw [rates…]        # default 3000 4000 5000: T1's load against the raw relay (the floor)
#   scripts/bench-stream.sh ab DIR [rates…]     # default 3000 4000 5000: T1, stream off, this build against the
#                                               # build in DIR (another commit's .build/release), runs interleaved
#
# PARLEY_BENCH_RUNS (3), PARLEY_BENCH_DURATION (20 s measured after 3 s of warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.build/release
runs=${PARLEY_BENCH_RUNS:-3}
duration=${PARLEY_BENCH_DURATION:-20}
work=/tmp/parley-bench-stream
port=18480
mode=${1:-t1}
shift || true

[ -x $B/parley ] && [ -x $B/parley-bench ] || { echo "bench-stream: build first: swift build -c release --traits Kafka" >&2; exit 1; }
mkdir -p $work
eval "$(scripts/kafka-mock.sh start)"
brokers=$PARLEY_TEST_KAFKA_BROKERS

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# Seeds 200 users in direct pairs with the build in $B, once per build directory (each build's
# own schema and tokens): sets `seeded` and `seedfile`.
seed() {
  local key
  key=$(realpath $B | md5sum | cut -c1-8)
  seeded=$work/seeded-$key seedfile=$work/seed-$key.json
  [ -f $seedfile ] && return
  rm -rf $seeded
  $B/parley seed --data-dir $seeded --users 200 --layout direct --out $seedfile.tmp >/dev/null
  mv $seedfile.tmp $seedfile
}

# One T1 run: a fresh copy of the seeded data directory, a node (stream on or off), 100 pairs at
# `rate` msgs/s. Prints "p99_ms cpu_us lost lag_le_100ms_fraction lag_p99_bucket_ms".
run_t1() {
  local stream=$1 rate=$2
  rm -rf $work/data && cp -r $seeded $work/data
  local env=(PARLEY_RATE_LIMITS=false PARLEY_PORT=$port PARLEY_DATA_DIR=$work/data PARLEY_LOG_LEVEL=warning)
  if [ "$stream" = on ]; then env+=(PARLEY_KAFKA_BROKERS=$brokers PARLEY_KAFKA_TOPIC_PREFIX="bench$RANDOM."); fi
  env "${env[@]}" $B/parley serve >$work/server.log 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fs localhost:$port/ready >/dev/null && break; sleep 0.1; done
  ${bench:-$B}/parley-bench direct --url ws://127.0.0.1:$port/api/v1/ws --seed $seedfile --pairs 100 --rate "$rate" \
    --duration "$duration" --warmup 3 --server-pid $pid --json $work/report.json >/dev/null 2>&1 &
  local bench=$!
  local lag="- -"
  if [ "$stream" = on ]; then
    # The lag histogram over the measured window only: a snapshot once connecting and the warm-up
    # are over (the first events also wait for the topics to be created), another at the end.
    sleep 5
    curl -fs localhost:$port/metrics >$work/metrics.before
  fi
  wait $bench
  if [ "$stream" = on ]; then
    for _ in $(seq 50); do
      [ "$(curl -fs localhost:$port/metrics | awk '/^parley_outbox_pending / {print $2}')" = 0 ] && break
      sleep 0.2
    done
    curl -fs localhost:$port/metrics >$work/metrics.after
    lag=$(python3 - $work/metrics.before $work/metrics.after <<'PY'
import re, sys
def buckets(path):
    found = {}
    for line in open(path):
        m = re.match(r'parley_outbox_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m: found[float("inf") if m[1] == "+Inf" else float(m[1])] = float(m[2])
    return found
before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
window = {le: after[le] - before.get(le, 0) for le in after}
total = window.get(float("inf"), 0)
if not total:
    print("- -")
else:
    p99 = next(le for le in sorted(window) if window[le] >= 0.99 * total)
    print(f"{window.get(0.1, 0) / total:.4f} {p99 * 1000:g}")
PY
)
  fi
  kill -TERM $pid; wait $pid || true
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p99, cpu, lost = r["endToEnd"]["p99"], r["server"]["cpuMicrosPerMessage"], r["counts"]["lost"]
print(f"{p99:.1f} {cpu:.0f} {lost}", sys.argv[2])' $work/report.json "$lag"
}

case $mode in
  t1)
    seed
    rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(1500 2000 2500 3000)
    for rate in "${rates[@]}"; do
      for stream in off on; do
        : >$work/results
        for r in $(seq "$runs"); do
          line=$(run_t1 $stream "$rate")
          echo "T1 rate $rate stream $stream run $r: p99 e2e / CPU µs per msg / lost / lag ≤ 100 ms / lag p99 bucket: $line"
          echo "$line" >>$work/results
        done
        echo "T1 rate $rate stream $stream MEDIAN: p99 $(cut -d' ' -f1 $work/results | median) ms, CPU $(cut -d' ' -f2 $work/results | median) µs/msg"
      done
    done
    ;;
  ab)
    # The same load on two builds in one session, alternating run by run so that the machine's
    # drift falls on both alike: the cost of a change to the send path.
    other=${1:?usage: scripts/bench-stream.sh ab DIR [rates…]}
    shift
    [ -x "$other/parley" ] || { echo "bench-stream: no parley build in $other" >&2; exit 1; }
    rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(3000 4000 5000)
    this=$B bench=$B   # one load generator for both sides
    for build in "$this" "$other"; do B=$build; seed; done
    for rate in "${rates[@]}"; do
      : >$work/results-this; : >$work/results-other
      for r in $(seq "$runs"); do
        for side in this other; do
          if [ $side = this ]; then B=$this; else B=$other; fi
          seed
          line=$(run_t1 off "$rate")
          echo "T1 rate $rate build $side ($B) run $r: p99 e2e / CPU µs per msg / lost: ${line% - -}"
          echo "$line" >>$work/results-$side
        done
      done
      for side in this other; do
        echo "T1 rate $rate build $side MEDIAN: p99 $(cut -d' ' -f1 $work/results-$side | median) ms, CPU $(cut -d' ' -f2 $work/results-$side | median) µs/msg"
      done
    done
    ;;
  lag)
    seed
    rate=${1:-5000}
    : >$work/results
    for r in $(seq "$runs"); do
      line=$(run_t1 on "$rate")
      echo "lag rate $rate run $r: p99 e2e / CPU µs per msg / lost / lag ≤ 100 ms / lag p99 bucket: $line"
      echo "$line" >>$work/results
    done
    echo "lag rate $rate MEDIAN: fraction ≤ 100 ms $(cut -d' ' -f4 $work/results | median), p99 bucket $(cut -d' ' -f5 $work/results | median) ms"
    ;;
  relay)
    events=${1:-200000}
    : >$work/results
    for r in $(seq "$runs"); do
      # A fresh cluster per run: the mock keeps every record in memory.
      scripts/kafka-mock.sh stop >/dev/null; eval "$(scripts/kafka-mock.sh start)"; brokers=$PARLEY_TEST_KAFKA_BROKERS
      out=$($B/parley-bench outbox --kafka-brokers "$brokers" --events "$events" | tail -1)
      echo "relay run $r: $out"
      echo "$out" | awk '{print $7}' >>$work/results
    done
    echo "relay MEDIAN: $(median <$work/results) events/s"
    ;;
  raw)
    # The floor of the machine, measured in the same session: T1's load against the raw relay
    # (NIO WebSocket, bytes forwarded, nothing decoded or stored).
    rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(3000 4000 5000)
    for rate in "${rates[@]}"; do
      : >$work/results
      for r in $(seq "$runs"); do
        $B/parley-bench relay --raw --port $((port + 1)) >/dev/null 2>&1 &
        relay=$!
        sleep 0.5
        $B/parley-bench direct --relay --url ws://127.0.0.1:$((port + 1))/api/v1/ws --pairs 100 --rate "$rate" --duration "$duration" \
          --warmup 3 --server-pid $relay --json $work/report.json >/dev/null 2>&1
        kill $relay; wait $relay 2>/dev/null || true
        line=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p99, cpu, lost = r["endToEnd"]["p99"], r["server"]["cpuMicrosPerMessage"], r["counts"]["lost"]
print(f"{p99:.1f} {cpu:.0f} {lost}")' $work/report.json)
        echo "raw relay rate $rate run $r: p99 e2e / CPU µs per msg / lost: $line"
        echo "$line" >>$work/results
      done
      echo "raw relay rate $rate MEDIAN: p99 $(cut -d' ' -f1 $work/results | median) ms, CPU $(cut -d' ' -f2 $work/results | median) µs/msg"
    done
    ;;
  *) echo "usage: scripts/bench-stream.sh t1|lag|relay|raw|ab [args]" >&2; exit 2 ;;
esac
