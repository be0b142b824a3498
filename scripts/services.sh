#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL and redis-server on loopback from Debian's packages, and
# an S3 API (moto's server mode, from PyPI: `pip install "moto[server]"`), for the test suites and
# the local cluster. Nothing listens beyond 127.0.0.1.
#
#   scripts/services.sh start   # prints the export lines for PARLEY_TEST_POSTGRES_URL / _REDIS_URL / _S3_ENDPOINT
#   scripts/services.sh stop
#   scripts/services.sh restart-postgres | restart-redis | stop-redis | start-redis   (recovery tests)
#
# PARLEY_SERVICES_DIR (default /tmp/parley-services), PARLEY_PG_PORT (55432), PARLEY_REDIS_PORT (56379),
# PARLEY_S3_PORT (59000).
set -euo pipefail

dir=${PARLEY_SERVICES_DIR:-/tmp/parley-services}
pg_port=${PARLEY_PG_PORT:-55432}
redis_port=${PARLEY_REDIS_PORT:-56379}
s3_port=${PARLEY_S3_PORT:-59000}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)

# PostgreSQL refuses to run as root; run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  [ -n "$pg_bin" ] || { echo "services: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    # The postgres user must be able to reach $dir: a parent made by `mktemp -d` is 0700. Grant
    # traversal (not listing) on each ancestor it cannot pass.
    ancestor=$(dirname "$(realpath "$dir")")
    while [ "$ancestor" != / ]; do
      runuser -u postgres -- test -x "$ancestor" || chmod o+x "$ancestor"
      ancestor=$(dirname "$ancestor")
    done
  fi
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    as_pg "$pg_bin/initdb" -D "$dir/pg" -U parley --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  fi
  if ! as_pg "$pg_bin/pg_ctl" -D "$dir/pg" status >/dev/null 2>&1; then
    as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/postgres.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir -c fsync=on -c max_connections=200" start >/dev/null
  fi
  for db in parley parley_test; do
    as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U parley -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" \
      | grep -q 1 || as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U parley "$db"
  done
}

stop_postgres() {
  [ -n "$pg_bin" ] && [ -f "$dir/pg/PG_VERSION" ] || return 0
  as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
}

start_redis() {
  command -v redis-server >/dev/null || { echo "services: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p "$dir"
  if ! redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

stop_redis() {
  redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
}

# moto keeps its buckets in memory: a restart empties them.
start_s3() {
  command -v moto_server >/dev/null || { echo "services: moto_server is not installed (pip install \"moto[server]\")" >&2; exit 1; }
  mkdir -p "$dir"
  if ! curl -fs "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1; then
    nohup moto_server -H 127.0.0.1 -p "$s3_port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$s3_port/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fs "http://127.0.0.1:$s3_port/moto-api/" >/dev/null || { echo "services: moto_server did not start ($dir/moto.log)" >&2; exit 1; }
  fi
}

stop_s3() {
  if [ -f "$dir/moto.pid" ]; then kill "$(cat "$dir/moto.pid")" 2>/dev/null || true; rm -f "$dir/moto.pid"; fi
}

case "${1:-start}" in
  start)
    start_postgres
    start_redis
    start_s3
    echo "export PARLEY_TEST_POSTGRES_URL=postgres://parley@127.0.0.1:$pg_port/parley_test"
    echo "export PARLEY_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
    echo "export PARLEY_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
    ;;
  stop)
    stop_s3
    stop_redis
    stop_postgres
    ;;
  stop-s3) stop_s3 ;;
  start-s3) start_s3 ;;
  restart-postgres)
    stop_postgres
    start_postgres
    ;;
  restart-redis)
    stop_redis
    start_redis
    ;;
  stop-redis) stop_redis ;;
  start-redis) start_redis ;;
  *)
    echo "usage: $0 start|stop|restart-postgres|restart-redis|stop-redis|start-redis|stop-s3|start-s3" >&2
    exit 2
    ;;
esac
