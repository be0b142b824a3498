#!/usr/bin/env bash
# Checks deploy/ as far as this machine can without a Docker engine: the compose file parses and
# has the services the cluster needs, the Dockerfile pins Swift 6.3, and nginx accepts nginx.conf
# (`nginx -t`, with the compose service names mapped to loopback since they only resolve inside compose).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import yaml
compose = yaml.safe_load(open("deploy/docker-compose.yml"))
services = compose["services"]
missing = {"postgres", "redis", "kafka", "parley1", "parley2", "nginx"} - set(services)
assert not missing, f"docker-compose.yml lacks {missing}"
assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "kafka must run in KRaft mode"
for node in ("parley1", "parley2"):
    env = services[node]["environment"]
    assert env["PARLEY_STORE"].startswith("postgres://") and env["PARLEY_REDIS"].startswith("redis://"), node
for consumer in ("notify", "webhooks"):
    assert services[consumer]["entrypoint"][-2:] == ["consume", consumer], f"{consumer} must run parley consume {consumer}"
print("deploy: docker-compose.yml parses; services:", ", ".join(sorted(services)))
PY

grep -q '^FROM swift:6\.3' deploy/Dockerfile || { echo "deploy: the Dockerfile must build FROM swift:6.3"; exit 1; }

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$nginx_bin" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/logs"
  sed -e 's/server parley\([0-9]\):8080/server 127.0.0.\1:8080/' deploy/nginx.conf >"$tmp/nginx.conf"
  "$nginx_bin" -t -q -p "$tmp" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid; error_log $tmp/logs/error.log;"
  echo "deploy: nginx -t accepts deploy/nginx.conf"
elif [ "${PARLEY_TEST_REQUIRE_ALL:-0}" = 1 ]; then
  echo "deploy: nginx is not installed"; exit 1
fi
