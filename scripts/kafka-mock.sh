#!/usr/bin/env bash
# Starts (or stops) a throwaway in-memory Kafka cluster on loopback for the integration tests:
# tools/kafka-mock, a small C program around librdkafka's mock cluster (Debian's librdkafka-dev).
# No JVM, no ZooKeeper or KRaft; topics are created on first use with 4 partitions.
#
#   scripts/kafka-mock.sh start [kafka-mock options]  # prints the export lines for
#                                                     # PARLEY_TEST_KAFKA_BROKERS / PARLEY_TEST_KAFKA_MOCK_PID
#   scripts/kafka-mock.sh stop
#   scripts/kafka-mock.sh down | up   # every broker down / up again (outage tests); returns once done
#
#   eval "$(scripts/kafka-mock.sh start --topic parley.test --partitions 8)"
#
# PARLEY_KAFKA_MOCK_DIR (default /tmp/parley-kafka-mock), PARLEY_KAFKA_MOCK_BROKERS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

dir=${PARLEY_KAFKA_MOCK_DIR:-/tmp/parley-kafka-mock}
brokers=${PARLEY_KAFKA_MOCK_BROKERS:-3}
src=$root/tools/kafka-mock/kafka-mock.c
bin=$root/.build/kafka-mock/kafka-mock
# kafka-mock's stdout: the bootstrap list, then one "brokers down" / "brokers up" line per signal.
out=$dir/kafka-mock.out

build() {
  [ -x "$bin" ] && [ ! "$src" -nt "$bin" ] && return 0
  command -v gcc >/dev/null || { echo "kafka-mock: gcc is not installed (apt-get install gcc)" >&2; exit 1; }
  [ -f /usr/include/librdkafka/rdkafka_mock.h ] \
    || { echo "kafka-mock: librdkafka headers missing (apt-get install librdkafka-dev)" >&2; exit 1; }
  mkdir -p "$(dirname "$bin")"
  # Build beside the target and rename, so a concurrent start never runs a half-written binary.
  gcc -std=c11 -O2 -Wall -Wextra -o "$bin.tmp.$$" "$src" -lrdkafka
  mv -f "$bin.tmp.$$" "$bin"
}

# The pid of the running kafka-mock, or nothing. The name check keeps a stale pid file from
# pointing us (and our signals) at an unrelated process that reused the pid.
running_pid() {
  local pid
  pid=$(cat "$dir/kafka-mock.pid" 2>/dev/null) || return 0
  if [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = kafka-mock ]; then echo "$pid"; fi
}

start() {
  build
  mkdir -p "$dir"
  local pid
  pid=$(running_pid)
  # One that is already running is reused as it is: its options stay those it was started with.
  if [ -z "$pid" ]; then
    # kafka-mock writes the bootstrap file last and atomically, and removes it on exit: its
    # presence means the cluster is listening.
    rm -f "$dir/bootstrap" "$dir/bootstrap.tmp"
    # Output to files, not inherited: `eval "$(... start)"` would otherwise wait for the mock's
    # stdout to close, i.e. forever.
    "$bin" --brokers "$brokers" --bootstrap-file "$dir/bootstrap" "$@" \
      </dev/null >"$out" 2>"$dir/kafka-mock.log" &
    pid=$!
    echo "$pid" >"$dir/kafka-mock.pid"
    for _ in $(seq 100); do
      [ -s "$dir/bootstrap" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [ ! -s "$dir/bootstrap" ]; then
      echo "kafka-mock: the mock cluster did not come up; its log:" >&2
      tail -20 "$dir/kafka-mock.log" >&2
      kill "$pid" 2>/dev/null || true
      rm -f "$dir/kafka-mock.pid"
      exit 1
    fi
  fi
  echo "export PARLEY_TEST_KAFKA_BROKERS=$(cat "$dir/bootstrap")"
  echo "export PARLEY_TEST_KAFKA_MOCK_PID=$pid"
}

stop() {
  local pid
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid"
    # Not our child any more, so no `wait`; tearing the cluster down takes about a second.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/kafka-mock.pid"
}

# Sends SIGUSR1 (down) or SIGUSR2 (up) and waits for kafka-mock to confirm, so a test that goes on
# after `down` knows the brokers really are down.
set_brokers() {
  local state=$1 signal=$2 pid before
  pid=$(running_pid)
  [ -n "$pid" ] || { echo "kafka-mock: not running (scripts/kafka-mock.sh start)" >&2; exit 1; }
  before=$(grep -c "^brokers $state\$" "$out" || true)
  kill "-$signal" "$pid"
  for _ in $(seq 50); do
    [ "$(grep -c "^brokers $state\$" "$out" || true)" -gt "$before" ] && return 0
    sleep 0.1
  done
  echo "kafka-mock: no confirmation of brokers $state" >&2
  exit 1
}

case "${1:-start}" in
  start)
    shift $(($# > 0 ? 1 : 0))
    start "$@"
    ;;
  stop) stop ;;
  down) set_brokers down USR1 ;;
  up) set_brokers up USR2 ;;
  *)
    echo "usage: $0 start [--partitions N] [--topic NAME]...|stop|down|up" >&2
    exit 2
    ;;
esac
