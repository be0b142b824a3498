#!/usr/bin/env bash
# A Parley cluster on loopback from Debian's packages: PostgreSQL, Redis, an S3 API (moto), N Parley
# nodes sharing one bucket for attachments, and nginx in front of them (the same nginx.conf as
# deploy/, with loopback upstreams).
#
#   scripts/cluster.sh start [N]     # N nodes (default 2); nginx on 127.0.0.1:${PARLEY_CLUSTER_PORT:-18200}
#   scripts/cluster.sh status
#   scripts/cluster.sh kill-node I   # SIGKILL node I (1-based), as a crash would
#   scripts/cluster.sh start-node I  # start node I again
#   scripts/cluster.sh restart-redis | restart-postgres   # bounce a dependency under the running nodes
#   scripts/cluster.sh stop-redis | start-redis           # keep Redis down for a while
#   scripts/cluster.sh stop
#
# PARLEY_BIN picks the binary (default: the release build if present, else the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

dir=${PARLEY_CLUSTER_DIR:-/tmp/parley-cluster}
port=${PARLEY_CLUSTER_PORT:-18200}
first_node_port=$((port + 1))
# Its own PostgreSQL and Redis, apart from the test suites' (scripts/services.sh defaults).
export PARLEY_SERVICES_DIR=$dir/services
export PARLEY_PG_PORT=${PARLEY_CLUSTER_PG_PORT:-55442}
export PARLEY_REDIS_PORT=${PARLEY_CLUSTER_REDIS_PORT:-56389}
export PARLEY_S3_PORT=${PARLEY_CLUSTER_S3_PORT:-59010}
s3_port=$PARLEY_S3_PORT
pg_port=$PARLEY_PG_PORT
redis_port=$PARLEY_REDIS_PORT

bin=${PARLEY_BIN:-}
if [ -z "$bin" ]; then
  if [ -x .build/release/parley ]; then bin=$root/.build/release/parley; else bin=$root/.build/debug/parley; fi
fi

node_count() { cat "$dir/nodes" 2>/dev/null || echo 2; }

start_node() {
  local i=$1 node_port=$((first_node_port + $1 - 1))
  mkdir -p "$dir/node$i"
  (
    cd "$dir/node$i"
    PARLEY_STORE="postgres://parley@127.0.0.1:$pg_port/parley" \
      PARLEY_REDIS="redis://127.0.0.1:$redis_port" \
      PARLEY_S3_ENDPOINT="http://127.0.0.1:$s3_port" PARLEY_S3_BUCKET=parley-cluster \
      PARLEY_S3_ACCESS_KEY_ID=parley PARLEY_S3_SECRET_ACCESS_KEY=parley-secret \
      PARLEY_JWT_SECRET="$(cat "$dir/jwt-secret")" \
      PARLEY_NODE_ID="node$i" PARLEY_HOST=127.0.0.1 PARLEY_PORT=$node_port PARLEY_DATA_DIR="$dir/node$i/data" \
      PARLEY_TRUST_PROXY=true PARLEY_LOG_LEVEL=${PARLEY_LOG_LEVEL:-notice} PARLEY_RATE_LIMITS=${PARLEY_RATE_LIMITS:-true} \
      exec "$bin" serve >>"$dir/node$i/parley.log" 2>&1
  ) &
  echo $! >"$dir/node$i/pid"
  for _ in $(seq 150); do
    curl -fsS "http://127.0.0.1:$node_port/ready" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$dir/node$i/pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "cluster: node$i did not become ready; its log:" >&2
  tail -20 "$dir/node$i/parley.log" >&2
  exit 1
}

start() {
  local n=${1:-2}
  [ -x "$bin" ] || { echo "cluster: $bin not built (swift build -c release --traits Kafka,Images)" >&2; exit 1; }
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "cluster: nginx is not installed (apt-get install nginx)" >&2; exit 1; }
  mkdir -p "$dir/nginx/logs"
  echo "$n" >"$dir/nodes"
  [ -s "$dir/jwt-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n' >"$dir/jwt-secret"
  chmod 600 "$dir/jwt-secret"
  eval "$(scripts/services.sh start)"
  # The nodes' shared bucket (moto takes an unsigned CreateBucket; a real S3 is set up by its operator).
  curl -sS -o /dev/null -X PUT "http://127.0.0.1:$s3_port/parley-cluster"
  for i in $(seq "$n"); do start_node "$i"; done

  # deploy/nginx.conf with loopback upstreams, a loopback listener and its files under $dir.
  local upstreams=""
  for i in $(seq "$n"); do
    upstreams+="        server 127.0.0.1:$((first_node_port + i - 1)) max_fails=1 fail_timeout=2s;\n"
  done
  awk -v ups="$upstreams" -v listen="127.0.0.1:$port" '
    /upstream / { done = 0 }
    /server parley[0-9]+:8080/ { if (!done) { printf "%s", ups; done = 1 }; next }
    /listen 8080;/ { sub("8080", listen) }
    { print }
  ' deploy/nginx.conf | sed "s/worker_processes auto;/worker_processes 1;/" >"$dir/nginx/nginx.conf"
  local nginx_bin
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  "$nginx_bin" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g "pid $dir/nginx/nginx.pid; error_log $dir/nginx/logs/error.log;" 
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "cluster: $n nodes behind nginx at http://127.0.0.1:$port (PostgreSQL :$pg_port, Redis :$redis_port, logs in $dir)"
}

stop() {
  if [ -f "$dir/nginx/nginx.pid" ]; then
    kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true
    rm -f "$dir/nginx/nginx.pid"
  fi
  for pidfile in "$dir"/node*/pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  scripts/services.sh stop
}

status() {
  curl -sS "http://127.0.0.1:$port/ready" && echo " (through nginx)"
  for i in $(seq "$(node_count)"); do
    printf 'node%s: ' "$i"
    curl -sS "http://127.0.0.1:$((first_node_port + i - 1))/ready" || printf 'down'
    echo
  done
}

case "${1:-}" in
  start) start "${2:-2}" ;;
  stop) stop ;;
  status) status ;;
  kill-node) kill -9 "$(cat "$dir/node$2/pid")"; rm -f "$dir/node$2/pid" ;;
  start-node) start_node "$2" ;;
  restart-redis) scripts/services.sh restart-redis ;;
  stop-redis) scripts/services.sh stop-redis ;;
  start-redis) scripts/services.sh start-redis ;;
  restart-postgres) scripts/services.sh restart-postgres ;;
  *) echo "usage: $0 start [N] | status | kill-node I | start-node I | restart-redis | restart-postgres | stop-redis | start-redis | stop" >&2; exit 2 ;;
esac
