#!/usr/bin/env bash
# A few seconds of parley-bench against a local parley and against the baseline relay, checking
# that the counts it reports are consistent (everything sent is acked and delivered exactly once,
# in order). No timing is asserted: benchmarks are not tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${PARLEY_BUILD_DIR:-.build/debug}
port=${PARLEY_BENCH_SMOKE_PORT:-18090}
relay_port=$((port + 1))
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_for() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench-smoke: $1 did not come up"; exit 1
}

"$bin/parley" seed --data-dir "$work/data" --users 20 --layout direct --out "$work/direct.json" >/dev/null
"$bin/parley" seed --data-dir "$work/data" --users 12 --layout group --group-size 6 --prefix grp --out "$work/group.json" >/dev/null
PARLEY_RATE_LIMITS=false "$bin/parley" serve --port "$port" --data-dir "$work/data" --log-level warning >"$work/server.log" 2>&1 &
pids+=($!)
server_pid=$!
wait_for "http://127.0.0.1:$port/ready"
"$bin/parley-bench" relay --port "$relay_port" >"$work/relay.log" 2>&1 &
pids+=($!)

common=(--rate 300 --duration 2 --warmup 1)
"$bin/parley-bench" direct --url "ws://127.0.0.1:$port/api/v1/ws" --seed "$work/direct.json" --pairs 10 "${common[@]}" \
  --server-pid "$server_pid" --json "$work/direct-report.json" --html "$work/direct-report.html" 2>/dev/null
"$bin/parley-bench" group --url "ws://127.0.0.1:$port/api/v1/ws" --seed "$work/group.json" --groups 2 --senders 2 "${common[@]}" \
  --json "$work/group-report.json" 2>/dev/null
sleep 0.5
"$bin/parley-bench" direct --relay --url "ws://127.0.0.1:$relay_port/api/v1/ws" --pairs 10 "${common[@]}" \
  --json "$work/relay-report.json" 2>/dev/null

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
failures = 0
for name in ("direct", "group", "relay"):
    report = json.loads((work / f"{name}-report.json").read_text())
    c = report["counts"]
    problems = []
    if c["sent"] == 0: problems.append("nothing was sent")
    if c["acked"] != c["sent"]: problems.append(f"acked {c['acked']} of {c['sent']}")
    if c["delivered"] != c["expectedDeliveries"]: problems.append(f"delivered {c['delivered']} of {c['expectedDeliveries']}")
    if c["lost"] or c["duplicates"] or c["outOfOrder"] or c["errors"]: problems.append(f"lost {c['lost']} dup {c['duplicates']} ooo {c['outOfOrder']} errors {c['errors']}")
    if report["endToEnd"]["samples"] == 0: problems.append("no latency samples")
    if sum(s["sent"] for s in report["timeline"]) != c["sent"]: problems.append("timeline does not add up to the sent count")
    print(f"bench-smoke {name}: sent {c['sent']} delivered {c['delivered']}/{c['expectedDeliveries']}" + (f" PROBLEMS: {problems}" if problems else " ok"))
    failures += bool(problems)
html = (work / "direct-report.html").read_text()
if "<svg" not in html or "End-to-end latency over time" not in html:
    print("bench-smoke: the HTML report has no charts"); failures += 1
server = json.loads((work / "direct-report.json").read_text()).get("server")
if not server or not server["rssMB"]:
    print("bench-smoke: no server CPU/RSS samples"); failures += 1
print(f"bench-smoke: {3 - failures if failures < 3 else 0} passed, {failures} failed")
sys.exit(1 if failures else 0)
PY
