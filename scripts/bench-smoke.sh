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
# A failing step shows what the tools wrote to stderr (progress lines are kept out of the log otherwise).
trap 'echo "bench-smoke: failed at line $LINENO"; tail -n 5 "$work"/*.err 2>/dev/null' ERR

for p in "$port" "$((port + 1))" "$((port + 2))"; do
  if curl -s -o /dev/null "http://127.0.0.1:$p/"; then echo "bench-smoke: port $p is already in use"; exit 1; fi
done

wait_for() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench-smoke: $1 did not come up"; exit 1
}

"$bin/parley" seed --data-dir "$work/data" --users 20 --layout direct --messages 120 --out "$work/direct.json" >/dev/null 2>"$work/seed.err"
"$bin/parley" seed --data-dir "$work/data" --users 12 --layout group --group-size 6 --prefix grp --out "$work/group.json" >/dev/null
PARLEY_RATE_LIMITS=false "$bin/parley" serve --port "$port" --data-dir "$work/data" --log-level warning >"$work/server.log" 2>&1 &
pids+=($!)
server_pid=$!
wait_for "http://127.0.0.1:$port/ready"
"$bin/parley-bench" relay --port "$relay_port" >"$work/relay.log" 2>&1 &
pids+=($!)
"$bin/parley-bench" relay --raw --port "$((port + 2))" >"$work/relay-raw.log" 2>&1 &
pids+=($!)

common=(--rate 300 --duration 2 --warmup 1)
"$bin/parley-bench" direct --url "ws://127.0.0.1:$port/api/v1/ws" --seed "$work/direct.json" --pairs 10 "${common[@]}" \
  --server-pid "$server_pid" --json "$work/direct-report.json" --html "$work/direct-report.html" 2>"$work/direct.err"
"$bin/parley-bench" group --url "ws://127.0.0.1:$port/api/v1/ws" --seed "$work/group.json" --groups 2 --senders 2 "${common[@]}" \
  --json "$work/group-report.json" 2>"$work/group.err"
"$bin/parley-bench" connect --url "ws://127.0.0.1:$port/api/v1/ws" --seed "$work/direct.json" --connections 200 --hold 2 \
  --server-pid "$server_pid" --json "$work/connect-report.json" --html "$work/connect-report.html" 2>"$work/connect.err"
"$bin/parley-bench" history --url "http://127.0.0.1:$port" --seed "$work/direct.json" --connections 4 --rate 200 --duration 2 --warmup 1 \
  --server-pid "$server_pid" --json "$work/history-report.json" --html "$work/history-report.html" 2>"$work/history.err"
"$bin/parley-bench" search --url "http://127.0.0.1:$port" --seed "$work/direct.json" --connections 4 --rate 100 --duration 2 --warmup 1 \
  --json "$work/search-report.json" 2>"$work/search.err"
sleep 0.5
"$bin/parley-bench" direct --relay --url "ws://127.0.0.1:$relay_port/api/v1/ws" --pairs 10 "${common[@]}" \
  --json "$work/relay-report.json" 2>"$work/relay.err"
"$bin/parley-bench" direct --relay --url "ws://127.0.0.1:$((port + 2))/api/v1/ws" --pairs 10 "${common[@]}" \
  --json "$work/relay-raw-report.json" 2>"$work/relay-raw.err"

# The HTML reports must open in Chromium and show their charts: load each one headless and count
# the drawn series in the resulting DOM; keep a screenshot of each as an artifact.
mkdir -p artifacts
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  if [ "${PARLEY_TEST_REQUIRE_ALL:-0}" = 1 ]; then echo "bench-smoke: chromium is not installed"; exit 1; fi
  echo "bench-smoke: SKIPPED opening the HTML reports (chromium not installed)"
else
  for name in direct connect history; do
    timeout 60 "$browser" --headless --no-sandbox --disable-gpu --dump-dom "file://$work/$name-report.html" >"$work/$name-dom.html" 2>"$work/chromium.err"
    timeout 60 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1400 \
      --screenshot="$PWD/artifacts/bench-$name-report.png" "file://$work/$name-report.html" >/dev/null 2>>"$work/chromium.err"
  done
fi

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
failures = 0
for name in ("direct", "group", "relay", "relay-raw"):
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
for name, minimum in (("direct", 6), ("connect", 3), ("history", 3)):
    dom = work / f"{name}-dom.html"
    if dom.exists():
        drawn = dom.read_text().count("<polyline")
        if drawn < minimum:
            print(f"bench-smoke: Chromium shows {drawn} chart lines in the {name} report, expected at least {minimum}"); failures += 1
        else:
            print(f"bench-smoke {name} report: opens in Chromium with {drawn} chart lines")

connect = json.loads((work / "connect-report.json").read_text())
problems = []
if connect["opened"] != connect["requested"] or connect["failed"]: problems.append(f"opened {connect['opened']} of {connect['requested']}")
if connect["aliveAfterHold"] != connect["opened"]: problems.append(f"{connect['aliveAfterHold']} of {connect['opened']} still answer")
if connect["connect"]["samples"] != connect["opened"]: problems.append("connect latency samples do not match")
if not connect.get("serverHeldRSSMB"): problems.append("no server RSS")
print(f"bench-smoke connect: {connect['opened']}/{connect['requested']} open, {connect['aliveAfterHold']} alive" + (f" PROBLEMS: {problems}" if problems else " ok"))
failures += bool(problems)

for name in ("history", "search"):
    report = json.loads((work / f"{name}-report.json").read_text())
    c = report["counts"]
    problems = []
    if c["sent"] == 0: problems.append("nothing was requested")
    if c["acked"] != c["sent"] or c["delivered"] != c["sent"] or c["errors"]: problems.append(f"answered {c['acked']} good {c['delivered']} of {c['sent']}, errors {c['errors']}")
    if report["endToEnd"]["samples"] == 0: problems.append("no latency samples")
    print(f"bench-smoke {name}: {c['delivered']}/{c['sent']} good answers" + (f" PROBLEMS: {problems}" if problems else " ok"))
    failures += bool(problems)

server = json.loads((work / "direct-report.json").read_text()).get("server")
if not server or not server["rssMB"]:
    print("bench-smoke: no server CPU/RSS samples"); failures += 1
print(f"bench-smoke: {'ok' if not failures else 'FAILED'} ({failures} problem(s))")
sys.exit(1 if failures else 0)
PY
