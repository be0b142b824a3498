"""The event consumers of the real binary: webhooks (signed POSTs with retries, in order per
conversation, dead letters) and notify (notification.requested for members without an open socket),
in a node without Kafka (consumers in-process, fed from the outbox) and with Kafka (`parley consume`
as a process of its own, or consumers inside `parley serve`).

What it proves:

- every webhook delivery is a POST whose body is the event envelope, with `Content-Type:
  application/json`, `Parley-Event-Type` and `Parley-Signature: t=<unix>,v1=<HMAC-SHA256(secret,
  "<t>.<body>")>` that verifies; an endpoint's `events` filter (exact or `family.*`) is honoured;
- a failing endpoint (HTTP 500) gets the event again with backoff while the conversation's later
  events wait: the first successful deliveries of a conversation come in seq order, nothing is
  skipped, and no request for seq n+1 is made before seq n succeeded;
- an endpoint that always fails gets each event exactly PARLEY_WEBHOOK_MAX_ATTEMPTS times (with
  growing waits in between), then a `webhook.failed` dead letter carrying the endpoint (without its
  query), the attempts, the last error and the original envelope goes to the dead-letter file
  (without Kafka) or the `parley.deadletter` topic (with Kafka), while another endpoint gets every
  event;
- `parley consume webhooks` delivers from the Kafka topics and stops with exit 0 on SIGTERM;
- notify: one `notification.requested` per member other than the sender with no open WebSocket,
  in `parley.notifications` keyed by the recipient (Kafka) or to webhooks subscribed to
  `notification.*` (no Kafka);
- a webhook URL that is not http(s) stops `parley serve` at start with a message naming
  PARLEY_WEBHOOKS.

The webhook receiver is a stdlib ThreadingHTTPServer on loopback. Needs the parley binary
(PARLEY_BIN, default .build/debug/parley); the Kafka tests need a build with `--traits Kafka` and a
cluster in PARLEY_TEST_KAFKA_BROKERS (`eval "$(scripts/kafka-mock.sh start)"`), and are skipped
without it (or fail with PARLEY_TEST_REQUIRE_ALL=1). The other tests need no Kafka.
"""

import asyncio
import collections
import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PARLEY_BIN", os.path.join(ROOT, ".build", "debug", "parley"))
BROKERS = os.environ.get("PARLEY_TEST_KAFKA_BROKERS", "")
REQUIRE_ALL = os.environ.get("PARLEY_TEST_REQUIRE_ALL", "0") == "1"

MAX_ATTEMPTS = 4
RETRY_MS = 50


def skip_or_fail(reason):
    if REQUIRE_ALL:
        pytest.fail(f"{reason}, and PARLEY_TEST_REQUIRE_ALL=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def require_kafka():
    if not BROKERS:
        skip_or_fail("PARLEY_TEST_KAFKA_BROKERS is not set (eval \"$(scripts/kafka-mock.sh start)\")")


def unique(prefix):
    return prefix + uuid.uuid4().hex[:8]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout, what, interval=0.1):
    """Polls condition() until it returns something truthy (returned); fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def clean_env():
    """The caller's environment without its PARLEY_* settings (PARLEY_TEST_* stay)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") or k.startswith("PARLEY_TEST_")}


# --- the node (as in test_stream.py, plus extra arguments and no Kafka by default) -----------------


class Node:
    """One `parley serve` on a free port with its own data directory; its output goes to a file
    that is printed when the test fails inside the `with` block."""

    def __init__(self, brokers=None, extra_env=None, extra_args=(), topic_prefix=None):
        if not os.access(BIN, os.X_OK):
            pytest.fail(f"no parley binary at {BIN} (swift build --build-tests --traits Kafka)", pytrace=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/api/v1/ws"
        self.node_id = unique("node-")
        self.topic_prefix = topic_prefix or unique("t") + "."
        self.dir = tempfile.mkdtemp(prefix="parley-consumers-")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "parley.log")
        self.extra_args = list(extra_args)
        self.process = None
        self.companions = []  # other processes (parley consume) whose logs are printed on failure
        env = clean_env()
        env.update(
            PARLEY_BCRYPT_COST="4",
            PARLEY_RATE_LIMITS="false",
            PARLEY_NODE_ID=self.node_id,
            PARLEY_JWT_SECRET="consumers-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
            PARLEY_KAFKA_TOPIC_PREFIX=self.topic_prefix,
        )
        if brokers:
            env["PARLEY_KAFKA_BROKERS"] = brokers
        env.update(extra_env or {})
        self.env = env

    def topic(self, name):
        return self.topic_prefix + name

    def command(self):
        return [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", self.data_dir, "--log-format", "json"] + self.extra_args

    def spawn(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir)
        return self.process

    def start(self, timeout=60):
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"parley exited with {self.process.returncode} while starting\n{self.log_tail()}")
            try:
                status, _, _ = self.request("GET", "/ready", timeout=5)
                if status == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"parley did not become ready within {timeout} s\n{self.log_tail()}")

    def stop(self, timeout=30):
        return stop_process(self.process, timeout)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return f"--- {self.log_path} (last {min(lines, len(text))} of {len(text)} lines) ---\n" + "\n".join(text[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, kind, error, traceback):
        try:
            for companion in self.companions:
                companion.stop()
            self.stop()
        finally:
            if kind is not None:
                print(self.log_tail(150))
                for companion in self.companions:
                    print(companion.log_tail(150))
                print(f"(node files kept in {self.dir})")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # --- HTTP ---

    def request(self, method, path, token=None, body=None, timeout=15):
        request = urllib.request.Request(self.base + path, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(request, data=data, timeout=timeout) as response:
                status, payload, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, payload, headers = error.code, error.read(), error.headers
        return status, (json.loads(payload) if payload else None), headers

    def api(self, method, path, token=None, body=None, expect=(200,)):
        status, reply, _ = self.request(method, path, token, body)
        assert status in expect, f"{method} {path}: {status} {json.dumps(reply)[:300]}"
        return reply

    def register(self, display_name=None):
        """Returns (user as the API returns it, access token)."""
        name = unique("u")
        body = {"username": name, "email": f"{name}@example.com", "password": "consumer-password-1"}
        if display_name:
            body["displayName"] = display_name
        reply = self.api("POST", "/api/v1/auth/register", body=body, expect=(201,))
        return reply["user"], reply["accessToken"]

    def group(self, token, name, member_ids):
        reply = self.api("POST", "/api/v1/conversations", token,
                         {"type": "group", "name": name, "memberIds": member_ids}, expect=(201,))
        return reply["conversation"]["id"]

    def send_rest(self, token, conversation, body):
        for _ in range(50):
            status, reply, headers = self.request("POST", f"/api/v1/conversations/{conversation}/messages", token,
                                                  {"body": body, "clientMsgId": unique("c-")})
            if status == 201:
                return reply["message"]
            if status in (429, 503):
                time.sleep(min(float(headers.get("Retry-After") or 0.2), 1.0))
                continue
            raise AssertionError(f"send to {conversation}: {status} {reply}")
        raise AssertionError(f"send to {conversation} kept being refused")

    def presence(self, token, user_ids):
        reply = self.api("GET", "/api/v1/presence?userIds=" + ",".join(user_ids), token)
        return {entry["userId"]: entry["status"] for entry in reply["presence"]}


def stop_process(process, timeout=30):
    """SIGTERM, then SIGKILL after `timeout`; returns (exit status, seconds it took, whether killed)."""
    if process is None or process.poll() is not None:
        return (process.returncode if process else None), 0.0, False
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=timeout)
        return status, time.monotonic() - began, False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return process.returncode, time.monotonic() - began, True


class ConsumeProcess:
    """`parley consume <name>` beside a node: the same binary and settings (its store, data
    directory, Kafka brokers and topic prefix), a node id of its own, its log in the node's directory."""

    def __init__(self, node, name, extra_env=None):
        self.node = node
        self.name = name
        self.node_id = unique(f"consume-{name}-")
        self.log_path = os.path.join(node.dir, f"consume-{name}.log")
        self.env = dict(node.env)
        self.env.update(PARLEY_NODE_ID=self.node_id, PARLEY_DATA_DIR=node.data_dir, PARLEY_LOG_FORMAT="json")
        self.env.update(extra_env or {})
        self.process = None
        node.companions.append(self)

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([BIN, "consume", self.name], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.node.dir)
        return self

    def stop(self, timeout=30):
        return stop_process(self.process, timeout)

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as log:
                text = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            text = []
        return f"--- {self.log_path} (last {min(lines, len(text))} of {len(text)} lines) ---\n" + "\n".join(text[-lines:])


# --- the webhook receiver -------------------------------------------------------------------------


class Delivery:
    """One request the receiver answered, in the order it answered them (`index`)."""

    __slots__ = ("index", "at", "path", "status", "body", "envelope", "headers", "signature_problem")

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def event_id(self):
        return (self.envelope or {}).get("id")

    @property
    def type(self):
        return (self.envelope or {}).get("type")


class Receiver:
    """Webhook endpoints on one loopback HTTP server, by path. Verifies every request's signature
    against the path's secret (a bad one is answered 401 and recorded), then answers what
    `policy(path, envelope, earlier deliveries of this event to this path) -> status` says."""

    def __init__(self, secrets, policy):
        self.secrets = secrets  # path -> secret
        self.policy = policy
        self.lock = threading.Lock()
        self.deliveries = []
        self.problems = []  # signature, header or body problems
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client would like

            def log_message(self, *args):
                pass

            def read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return body
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):  # noqa: N802
                body = self.read_body()
                status = receiver.handle(self.path, body, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                receiver.problems.append(f"GET {self.path}: webhooks must POST")
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, raw_path, body, headers):
        path = raw_path.split("?", 1)[0]
        headers = {name.lower(): value for name, value in headers.items()}
        problem = None
        envelope = None
        try:
            envelope = json.loads(body)
        except ValueError as error:
            problem = f"body is not JSON ({error}): {body[:200]!r}"
        secret = self.secrets.get(path)
        if secret is None:
            problem = f"a request to an unknown path {raw_path}"
        if problem is None:
            problem = self.check_signature(headers.get("parley-signature"), body, secret)
        if problem is None and headers.get("parley-event-type") != envelope.get("type"):
            problem = f"Parley-Event-Type {headers.get('parley-event-type')!r}, body type {envelope.get('type')!r}"
        if problem is None and (headers.get("content-type") or "").split(";")[0].strip().lower() != "application/json":
            problem = f"Content-Type {headers.get('content-type')!r}"
        with self.lock:
            if problem is not None:
                self.problems.append(f"{path} request {len(self.deliveries)}: {problem}")
                status = 401
            else:
                earlier = [d for d in self.deliveries if d.path == path and d.event_id == envelope.get("id")]
                status = self.policy(path, envelope, earlier)
            self.deliveries.append(Delivery(index=len(self.deliveries), at=time.monotonic(), path=path, status=status,
                                            body=body, envelope=envelope, headers=headers, signature_problem=problem))
        return status

    @staticmethod
    def check_signature(header, body, secret):
        if not header:
            return "no Parley-Signature header"
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        if set(parts) != {"t", "v1"}:
            return f"Parley-Signature {header!r} is not t=…,v1=…"
        try:
            timestamp = int(parts["t"])
        except ValueError:
            return f"Parley-Signature timestamp {parts['t']!r} is not an integer"
        if abs(time.time() - timestamp) > 60:
            return f"Parley-Signature timestamp {timestamp} is {time.time() - timestamp:.0f} s off"
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts["v1"]):
            return f"Parley-Signature v1 {parts['v1']} does not verify (expected {expected})"
        return None

    def snapshot(self, path=None):
        with self.lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def delivered(self, path, event_type=None):
        """The first successful (2xx) delivery per event id to `path`, in answer order."""
        first = {}
        for delivery in self.snapshot(path):
            if 200 <= delivery.status < 300 and delivery.event_id not in first:
                if event_type is None or delivery.type == event_type:
                    first[delivery.event_id] = delivery
        return list(first.values())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        return False


def webhooks_setting(*endpoints):
    """PARLEY_WEBHOOKS from (url, secret, events or None)."""
    entries = []
    for url, secret, events in endpoints:
        entry = {"url": url, "secret": secret}
        if events is not None:
            entry["events"] = events
        entries.append(entry)
    return json.dumps(entries)


def webhook_env(*endpoints):
    return {"PARLEY_WEBHOOKS": webhooks_setting(*endpoints), "PARLEY_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "PARLEY_WEBHOOK_RETRY_MS": str(RETRY_MS), "PARLEY_WEBHOOK_TIMEOUT_MS": "5000"}


class FlakyPolicy:
    """500 for the first `failures` requests to `path` for events of seq `from_seq` or later (so the
    failures fall in the middle of a conversation, with earlier events delivered and later ones
    queued behind), but never more than `per_event` times for one event (fewer than the max
    attempts, so no event is dead-lettered however the failures fall on concurrent
    conversations); 200 otherwise. Other paths: `others`."""

    def __init__(self, path, failures=6, per_event=2, from_seq=4, others=None):
        self.path, self.failures, self.per_event, self.from_seq = path, failures, per_event, from_seq
        self.others = others or {}
        self.failed = 0

    def __call__(self, path, envelope, earlier):
        if path != self.path:
            return self.others.get(path, 200)
        if self.failed < self.failures and len(earlier) < self.per_event and (envelope.get("seq") or 0) >= self.from_seq:
            self.failed += 1
            return 500
        return 200


def check_in_order_with_retries(receiver, path, sent, failures_expected, acked_at):
    """Every sent message arrived at `path` as message.created, each with the message as the send
    returned it; per conversation the first successful deliveries are in seq order, and no request
    for an event was made before the conversation's previous event was delivered; the failed events
    were retried. Returns a summary line."""
    delivered = receiver.delivered(path, "message.created")
    by_message = {d.envelope["data"]["message"]["id"]: d for d in delivered}
    missing = [m for m in sent if m["id"] not in by_message]
    assert not missing, f"{len(missing)} of {len(sent)} messages never delivered to {path}, e.g. seq {[m['seq'] for m in missing[:5]]}"
    different = [(m, by_message[m["id"]].envelope["data"]["message"]) for m in sent
                 if by_message[m["id"]].envelope["data"]["message"] != m]
    assert not different, f"{len(different)} deliveries carry a message unlike the send's, e.g. {different[0]}"
    extra = set(by_message) - {m["id"] for m in sent}
    assert not extra, f"{len(extra)} message.created deliveries for messages nobody sent here"

    requests = [d for d in receiver.snapshot(path) if d.type == "message.created"]
    first_success = {d.event_id: d.index for d in delivered}
    per_conversation = collections.defaultdict(list)
    for d in delivered:
        per_conversation[d.envelope["conversationId"]].append(d.envelope["seq"])
    for conversation, seqs in per_conversation.items():
        expected = sorted(m["seq"] for m in sent if m["conversationId"] == conversation)
        assert seqs == expected, (f"conversation {conversation}: first successful deliveries in seq order {seqs}, "
                                  f"expected {expected} (a later event overtook a failing one, or one was skipped)")
    # No event of a conversation was even tried before the previous one succeeded.
    previous = {}
    for conversation in per_conversation:
        events = sorted((d for d in delivered if d.envelope["conversationId"] == conversation), key=lambda d: d.envelope["seq"])
        for before, after in zip(events, events[1:]):
            previous[after.event_id] = before
    overtaking = [(d.envelope["seq"], previous[d.event_id].envelope["seq"]) for d in requests
                  if d.event_id in previous and d.index < first_success[previous[d.event_id].event_id]]
    assert not overtaking, (f"{len(overtaking)} requests for an event made before the previous event of its conversation "
                            f"was delivered (seq, waiting for seq): {overtaking[:5]}")

    attempts = collections.Counter(d.event_id for d in requests)
    failed = [d for d in requests if d.status >= 300]
    assert len(failed) >= failures_expected, f"the receiver failed only {len(failed)} requests, expected {failures_expected}"
    not_retried = {d.event_id for d in failed} - set(first_success)
    assert not not_retried, f"{len(not_retried)} events failed and were never delivered"
    retried_events = {d.event_id for d in failed}
    for event_id in retried_events:
        statuses = [d.status for d in requests if d.event_id == event_id]
        assert statuses[-1] == 200 and all(s == 500 for s in statuses[:-1]), \
            f"event {event_id}: answers {statuses}, expected 500s then one 200"
    repeated_after_success = {e: n for e, n in attempts.items() if e not in retried_events and n > 1}
    # The test proves waiting only if a later event of the conversation existed (its send was
    # acknowledged) while a failing event was still being retried.
    by_event = {d.event_id: d for d in delivered}
    waited = []
    for event_id in retried_events:
        failing = by_event[event_id].envelope
        behind = [m for m in sent if m["conversationId"] == failing["conversationId"] and m["seq"] > failing["seq"]
                  and acked_at[m["id"]] < by_event[event_id].at]
        if behind:
            waited.append((failing["seq"], len(behind)))
    assert waited, ("no later event was committed while a failing one was retried, so nothing had to wait: "
                    "the test did not exercise ordering under retries")
    return (f"{len(sent)} messages, {len(requests)} requests, {len(failed)} answered 500 over {len(retried_events)} events "
            f"(attempts {sorted(attempts[e] for e in retried_events)}), {len(repeated_after_success)} repeated after a 200; "
            f"(failing seq, later events waiting behind it): {sorted(waited)}")


def send_interleaved(node, plan, acked_at=None):
    """Sends plan[i] = (token, conversation, body) over REST in order; returns the messages, and
    records in `acked_at` when each send was acknowledged (time.monotonic(), by message id)."""
    messages = []
    for token, conversation, body in plan:
        message = node.send_rest(token, conversation, body)
        if acked_at is not None:
            acked_at[message["id"]] = time.monotonic()
        messages.append(message)
    return messages


def two_conversations(node, count_a, count_b):
    """Alice and Bob share A; Alice and Carol share B. Returns (plan of sends interleaving both)."""
    (alice, alice_token), (bob, bob_token), (carol, carol_token) = [node.register() for _ in range(3)]
    a = node.group(alice_token, "Hooks A", [bob["id"]])
    b = node.group(alice_token, "Hooks B", [carol["id"]])
    plan = []
    for i in range(max(count_a, count_b)):
        if i < count_a:
            plan.append((alice_token if i % 2 == 0 else bob_token, a, f"A {i} über Webhook ✓"))
        if i < count_b:
            plan.append((carol_token if i % 2 == 0 else alice_token, b, f"B {i} über Webhook ✓"))
    return plan


def read_dead_letters(path):
    try:
        with open(path, "rb") as file:
            return [json.loads(line) for line in file.read().decode().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def check_dead_letter(letter, original_body, endpoint):
    """A webhook.failed dead letter for the original envelope (bytes as the endpoint received it)."""
    original = json.loads(original_body)
    problems = []
    if letter.get("type") != "webhook.failed":
        problems.append(f"type {letter.get('type')!r}")
    for field in ("id", "occurredAt", "node"):
        if not letter.get(field):
            problems.append(f"no {field}")
    if letter.get("id") == original["id"]:
        problems.append("the dead letter has the original event's id")
    if (letter.get("conversationId"), letter.get("seq")) != (original["conversationId"], original["seq"]):
        problems.append(f"conversationId/seq {letter.get('conversationId')}/{letter.get('seq')}, original "
                        f"{original['conversationId']}/{original['seq']}")
    data = letter.get("data") or {}
    if data.get("endpoint") != endpoint:
        problems.append(f"endpoint {data.get('endpoint')!r}, expected {endpoint!r}")
    if data.get("attempts") != MAX_ATTEMPTS:
        problems.append(f"attempts {data.get('attempts')!r}, expected {MAX_ATTEMPTS}")
    if data.get("lastError") != "HTTP 500":
        problems.append(f"lastError {data.get('lastError')!r}, expected 'HTTP 500'")
    if data.get("event") != original:
        problems.append(f"event {json.dumps(data.get('event'))[:300]} is not the original {original_body[:300]!r}")
    return problems


def check_attempts_and_backoff(receiver, path, event_ids):
    """Each event reached `path` exactly MAX_ATTEMPTS times, all answered 500, with waits in between
    no shorter than the backoff's lower bound (half of RETRY_MS · 2^(n-1) before retry n)."""
    requests = receiver.snapshot(path)
    by_event = collections.defaultdict(list)
    for d in requests:
        by_event[d.event_id].append(d)
    wrong = {e: len(by_event[e]) for e in event_ids if len(by_event[e]) != MAX_ATTEMPTS}
    assert not wrong, f"attempts per event at {path} (expected {MAX_ATTEMPTS} each): {wrong}"
    extra = set(by_event) - set(event_ids)
    assert not extra, f"{len(extra)} events at {path} that should not have gone there"
    short = []
    for event_id in event_ids:
        times = [d.at for d in by_event[event_id]]
        for n, (before, after) in enumerate(zip(times, times[1:]), start=1):
            lower = RETRY_MS * 2 ** (n - 1) / 2 / 1000
            if after - before < lower * 0.9:
                short.append((event_id, n, round(after - before, 3), lower))
    assert not short, f"retries sooner than the backoff allows (event, retry, seconds, lower bound): {short[:5]}"


# --- WebSockets held open (presence) --------------------------------------------------------------


class OpenSockets:
    """Holds one authenticated WebSocket per token open (reading and dropping its frames) on a thread
    of its own until the `with` block ends; each must stay open all along."""

    def __init__(self, node, tokens):
        self.node, self.tokens = node, tokens
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.error = None
        self.closed_early = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            asyncio.run(self.main())
        except Exception as error:  # noqa: BLE001 — reported by __enter__ / __exit__
            self.error = error
            self.ready.set()

    async def main(self):
        sockets = []
        try:
            for token in self.tokens:
                sock = await websockets.connect(self.node.ws, additional_headers={"Authorization": f"Bearer {token}"},
                                                open_timeout=20)
                sockets.append(sock)
                hello = json.loads(await asyncio.wait_for(sock.recv(), 20))
                assert hello["type"] == "hello", hello

            async def drain(i, sock):
                try:
                    async for _ in sock:
                        pass
                finally:
                    if not self.stopping.is_set():
                        self.closed_early.append((i, sock.close_code))

            readers = [asyncio.create_task(drain(i, sock)) for i, sock in enumerate(sockets)]
            self.ready.set()
            await asyncio.to_thread(self.stopping.wait)
            for reader in readers:
                reader.cancel()
        finally:
            for sock in sockets:
                await sock.close()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(30), "the WebSockets did not open within 30 s"
        if self.error:
            raise AssertionError(f"opening the WebSockets failed: {self.error!r}")
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=15)
        return False


# --- Kafka ----------------------------------------------------------------------------------------


class TopicReader:
    """Reads a topic from the beginning of every partition (assigned, no group), keeping every
    record as (partition, offset, key, value, headers)."""

    def __init__(self, topic):
        from confluent_kafka import Consumer
        self.topic = topic
        self.records = []
        self.errors = []
        self.consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": unique("parley-consumers-test-"),
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "enable.partition.eof": False})
        self.assigned = False

    def _assign(self):
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        metadata = self.consumer.list_topics(self.topic, timeout=5)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)])
        self.assigned = True
        return True

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.assigned:
                try:
                    if not self._assign():
                        time.sleep(0.2)
                        continue
                except Exception as error:  # noqa: BLE001 — KafkaException while the topic does not exist yet
                    self.errors.append(str(error))
                    time.sleep(0.2)
                    continue
            for message in self.consumer.consume(num_messages=1000, timeout=0.3):
                if message.error() is not None:
                    self.errors.append(str(message.error()))
                    continue
                headers = [(n, v.decode() if v is not None else None) for n, v in (message.headers() or [])]
                self.records.append({"partition": message.partition(), "offset": message.offset(),
                                     "key": message.key().decode() if message.key() is not None else None,
                                     "value": message.value(), "headers": headers})

    def read_until(self, done, timeout, what):
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: timed out after {timeout} s waiting for {what}; {len(self.records)} records "
                                     f"read, partitions assigned: {self.assigned}, consumer errors: {self.errors[-5:]}")
            self.poll(0.5)
        return self.records

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.consumer.close()
        return False


def distinct_envelopes(records):
    """{event id: envelope} over the records (a repeated id is a re-send)."""
    return {json.loads(r["value"])["id"]: json.loads(r["value"]) for r in records}


# --- tests ----------------------------------------------------------------------------------------


def test_webhooks_embedded_retry_then_deliver_in_order():
    secret = "whsec-" + uuid.uuid4().hex
    policy = FlakyPolicy("/hook", failures=6, per_event=2)
    with Receiver({"/hook": secret}, policy) as receiver:
        # No Kafka, no PARLEY_CONSUMERS: the webhooks consumer runs in-process by default.
        node = Node(extra_env=webhook_env((receiver.url("/hook"), secret, ["message.*"])))
        with node:
            began = time.monotonic()
            acked_at = {}
            sent = send_interleaved(node, two_conversations(node, 30, 8), acked_at)
            wanted = {m["id"] for m in sent}
            wait_until(lambda: wanted <= {d.envelope["data"]["message"]["id"] for d in receiver.delivered("/hook", "message.created")},
                       60, f"all {len(sent)} messages delivered to the webhook")
            took = time.monotonic() - began
            time.sleep(0.5)  # a late repeat or an unwanted event would show up here
            assert not receiver.problems, f"{len(receiver.problems)} bad requests, e.g. {receiver.problems[:3]}"
            summary = check_in_order_with_retries(receiver, "/hook", sent, failures_expected=6, acked_at=acked_at)
            others = collections.Counter(d.type for d in receiver.snapshot("/hook") if not (d.type or "").startswith("message."))
            assert not others, f"events the endpoint's filter [\"message.*\"] excludes were delivered: {dict(others)}"
            dead = os.path.join(node.data_dir, "deadletter.jsonl")
            assert not read_dead_letters(dead), f"dead letters written though every event was delivered: {read_dead_letters(dead)[:2]}"
            assert node.process.poll() is None, f"parley exited with {node.process.returncode}"
    print(f"{summary}; all delivered {took:.1f} s after the first send")


def test_webhooks_embedded_permanent_failure_dead_letters():
    good_secret, bad_secret = "whsec-good-" + uuid.uuid4().hex, "whsec-bad-" + uuid.uuid4().hex
    with Receiver({"/good": good_secret, "/bad": bad_secret}, lambda path, envelope, earlier: 500 if path == "/bad" else 200) as receiver:
        directory = tempfile.mkdtemp(prefix="parley-deadletters-")
        dead_path = os.path.join(directory, "dead.jsonl")
        # The good endpoint wants every event (no filter), the bad one message.created exactly; the
        # bad URL has a query (a token, say) that must not show in the dead letters.
        node = Node(extra_env=dict(webhook_env((receiver.url("/good"), good_secret, None),
                                               (receiver.url("/bad") + "?token=hunter2", bad_secret, ["message.created"])),
                                   PARLEY_DEADLETTER_FILE=dead_path, PARLEY_CONSUMERS="webhooks"))
        try:
            with node:
                began = time.monotonic()
                sent = send_interleaved(node, two_conversations(node, 5, 3))
                letters = wait_until(lambda: (lambda ls: ls if len(ls) >= len(sent) else None)(read_dead_letters(dead_path)),
                                     60, f"{len(sent)} dead letters in {dead_path}")
                took = time.monotonic() - began
                time.sleep(1.0)  # no fifth attempt, no second dead letter
                letters = read_dead_letters(dead_path)
                assert not receiver.problems, f"{len(receiver.problems)} bad requests, e.g. {receiver.problems[:3]}"

                # The good endpoint: every message, and the other event types too (no filter).
                good = {d.envelope["data"]["message"]["id"] for d in receiver.delivered("/good", "message.created")}
                missing = {m["id"] for m in sent} - good
                assert not missing, f"{len(missing)} messages never reached the endpoint that answers 200"
                good_types = collections.Counter(d.type for d in receiver.snapshot("/good"))
                assert "conversation.created" in good_types, f"the unfiltered endpoint got only {dict(good_types)}"
                assert "webhook.failed" not in good_types, "dead letters were delivered to a webhook"

                # The bad endpoint: exactly the message.created events, MAX_ATTEMPTS times each.
                bad_requests = receiver.snapshot("/bad")
                bad_types = collections.Counter(d.type for d in bad_requests)
                assert set(bad_types) == {"message.created"}, f"the endpoint filtered to message.created got {dict(bad_types)}"
                originals = {}
                for d in bad_requests:
                    originals.setdefault(d.event_id, d.body)
                    assert d.body == originals[d.event_id], f"event {d.event_id} retried with a different body"
                bad_messages = {json.loads(body)["data"]["message"]["id"] for body in originals.values()}
                assert bad_messages == {m["id"] for m in sent}, "the failing endpoint did not get every message"
                check_attempts_and_backoff(receiver, "/bad", list(originals))

                # One dead letter per event, each complete.
                by_original = collections.defaultdict(list)
                for letter in letters:
                    by_original[((letter.get("data") or {}).get("event") or {}).get("id")].append(letter)
                assert set(by_original) == set(originals), (f"dead letters for {len(by_original)} events, expected the "
                                                            f"{len(originals)} the failing endpoint got: {sorted(by_original)[:3]}")
                repeated = {e: len(ls) for e, ls in by_original.items() if len(ls) > 1}
                assert not repeated, f"events dead-lettered more than once: {repeated}"
                problems = {e: check_dead_letter(ls[0], originals[e], receiver.url("/bad")) for e, ls in by_original.items()}
                problems = {e: p for e, p in problems.items() if p}
                assert not problems, f"{len(problems)} bad dead letters, e.g. {list(problems.items())[:2]}\nfirst: {json.dumps(letters[0])[:600]}"
                assert "hunter2" not in json.dumps(letters), "the endpoint's query string is in a dead letter"
                assert not os.path.exists(os.path.join(node.data_dir, "deadletter.jsonl")), \
                    "dead letters went to the default file though PARLEY_DEADLETTER_FILE is set"
                assert node.process.poll() is None, f"parley exited with {node.process.returncode}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"{len(sent)} events dead-lettered after {MAX_ATTEMPTS} attempts each, {took:.1f} s after the first send")


def test_webhooks_with_kafka_consume_process():
    require_kafka()
    secret, bad_secret = "whsec-" + uuid.uuid4().hex, "whsec-bad-" + uuid.uuid4().hex
    policy = FlakyPolicy("/hook", failures=6, per_event=2, others={"/bad": 500})
    with Receiver({"/hook": secret, "/bad": bad_secret}, policy) as receiver:
        hooks = webhook_env((receiver.url("/hook"), secret, ["message.*"]),
                            (receiver.url("/bad") + "?sig=x", bad_secret, ["message.created"]))
        # The node relays to Kafka; it runs no consumer itself (with Kafka, none by default).
        node = Node(brokers=BROKERS)
        with node:
            consume = ConsumeProcess(node, "webhooks", extra_env=hooks).start()
            began = time.monotonic()
            acked_at = {}
            sent = send_interleaved(node, two_conversations(node, 12, 6), acked_at)
            wanted = {m["id"] for m in sent}

            def all_delivered():
                if consume.process.poll() is not None:
                    raise AssertionError(f"parley consume exited with {consume.process.returncode}\n{consume.log_tail()}")
                return wanted <= {d.envelope["data"]["message"]["id"] for d in receiver.delivered("/hook", "message.created")}

            # Joining the mock cluster's consumer group may take several seconds.
            wait_until(all_delivered, 120, f"all {len(sent)} messages delivered to the webhook by parley consume")
            delivered_after = time.monotonic() - began
            assert not receiver.problems, f"{len(receiver.problems)} bad requests, e.g. {receiver.problems[:3]}"
            summary = check_in_order_with_retries(receiver, "/hook", sent, failures_expected=6, acked_at=acked_at)

            # The failing endpoint: each message.created MAX_ATTEMPTS times, then parley.deadletter.
            with TopicReader(node.topic("deadletter")) as reader:
                records = reader.read_until(
                    lambda rs: {(json.loads(r["value"]).get("data") or {}).get("event", {}).get("data", {}).get("message", {}).get("id")
                                for r in rs} >= wanted,
                    timeout=90, what=f"dead letters for all {len(sent)} messages")
                dead_after = time.monotonic() - began
                reader.poll(1.0)
                records = reader.records
            originals = {}
            for d in receiver.snapshot("/bad"):
                originals.setdefault(d.event_id, d.body)
            check_attempts_and_backoff(receiver, "/bad", list(originals))
            letters = distinct_envelopes(records)
            by_original = collections.defaultdict(list)
            for letter in letters.values():
                by_original[letter["data"]["event"]["id"]].append(letter)
            assert set(by_original) == set(originals), f"dead letters for {len(by_original)} events, the failing endpoint got {len(originals)}"
            repeated = {e: len(ls) for e, ls in by_original.items() if len(ls) > 1}
            assert not repeated, f"events dead-lettered more than once (distinct dead-letter ids): {repeated}"
            problems = {e: check_dead_letter(ls[0], originals[e], receiver.url("/bad")) for e, ls in by_original.items()}
            problems = {e: p for e, p in problems.items() if p}
            assert not problems, f"{len(problems)} bad dead letters, e.g. {list(problems.items())[:2]}"
            bad_records = []
            for record in records:
                letter = json.loads(record["value"])
                types = [v for n, v in record["headers"] if n == "parley-event-type"]
                if record["key"] != letter["conversationId"] or types != ["webhook.failed"]:
                    bad_records.append((record["key"], types, letter["conversationId"]))
            assert not bad_records, f"dead-letter records not keyed by conversation / without the event-type header: {bad_records[:3]}"

            status, took, killed = consume.stop(timeout=15)
            assert not killed, f"parley consume did not exit within 15 s of SIGTERM\n{consume.log_tail()}"
            assert status == 0, f"parley consume exited with {status} after SIGTERM\n{consume.log_tail()}"
            assert node.process.poll() is None, f"parley serve exited with {node.process.returncode}"
    print(f"{summary}; all delivered {delivered_after:.1f} s after the first send; {len(originals)} dead letters in the topic "
          f"after {dead_after:.1f} s ({len(records)} records); consume stopped in {took:.1f} s")


@pytest.mark.parametrize("mode", ["kafka", "in-process"])
def test_notify_two_offline_members(mode):
    secret = "whsec-" + uuid.uuid4().hex
    receiver = Receiver({"/notify": secret}, lambda path, envelope, earlier: 200)
    if mode == "kafka":
        require_kafka()
        node = Node(brokers=BROKERS, extra_env={"PARLEY_CONSUMERS": "notify"})
    else:
        node = Node(extra_env=webhook_env((receiver.url("/notify"), secret, ["notification.*"])),
                    extra_args=["--consumers", "notify,webhooks"])
    with receiver, node:
        (alice, alice_token), (bob, bob_token), (carol, _), (dave, _) = [
            node.register(display_name=f"{name} Ä.") for name in ("Alice", "Bob", "Carol", "Dave")]
        everyone = [alice["id"], bob["id"], carol["id"], dave["id"]]
        conversation = node.group(alice_token, "Notify", everyone[1:])
        with OpenSockets(node, [alice_token, bob_token]) as sockets:
            expected_presence = {alice["id"]: "online", bob["id"]: "online", carol["id"]: "offline", dave["id"]: "offline"}
            wait_until(lambda: node.presence(alice_token, everyone) == expected_presence, 10,
                       f"presence {expected_presence} (last: {node.presence(alice_token, everyone)})")
            body = "Treffen wir uns um fünf? ✓"
            message = node.send_rest(alice_token, conversation, body)

            if mode == "kafka":
                with TopicReader(node.topic("notifications")) as reader:
                    reader.read_until(lambda rs: len(distinct_envelopes(rs)) >= 2, 90, "two notification.requested events")
                    reader.poll(2.0)  # a grace period: no third one
                    records = reader.records
                notifications = distinct_envelopes(records)
                wrong_records = []
                for record in records:
                    envelope = json.loads(record["value"])
                    types = [v for n, v in record["headers"] if n == "parley-event-type"]
                    if record["key"] != envelope["data"]["userId"] or types != ["notification.requested"]:
                        wrong_records.append((record["key"], types, envelope["data"].get("userId")))
                assert not wrong_records, f"notification records not keyed by the recipient / without the event-type header: {wrong_records}"
            else:
                wait_until(lambda: len(receiver.delivered("/notify")) >= 2, 60, "two notifications delivered to the webhook")
                time.sleep(2.0)  # a grace period: no third one
                assert not receiver.problems, f"{len(receiver.problems)} bad requests, e.g. {receiver.problems[:3]}"
                notifications = {d.event_id: d.envelope for d in receiver.delivered("/notify")}
            assert not sockets.closed_early, f"a WebSocket closed while the notifications were made: {sockets.closed_early}"

        by_user = collections.defaultdict(list)
        for envelope in notifications.values():
            by_user[envelope["data"].get("userId")].append(envelope)
        names = {alice["id"]: "alice", bob["id"]: "bob", carol["id"]: "carol", dave["id"]: "dave"}
        assert sorted(by_user) == sorted([carol["id"], dave["id"]]), (
            f"notifications for {[names.get(u, u) for u in by_user]}, expected exactly carol and dave (offline); "
            f"alice sent, bob had a socket open")
        assert all(len(es) == 1 for es in by_user.values()), \
            f"distinct notification events per user: {{{', '.join(f'{names[u]}: {len(es)}' for u, es in by_user.items())}}}"
        for user_id, (envelope,) in by_user.items():
            assert envelope["type"] == "notification.requested", envelope
            assert (envelope["conversationId"], envelope["seq"]) == (conversation, message["seq"]), envelope
            expected = {"userId": user_id, "conversationId": conversation, "seq": message["seq"], "messageId": message["id"],
                        "sender": {"id": alice["id"], "username": alice["username"], "displayName": alice["displayName"]},
                        "preview": body}
            assert envelope["data"] == expected, f"{names[user_id]}'s notification data {envelope['data']}, expected {expected}"
        assert node.process.poll() is None, f"parley exited with {node.process.returncode}"


def test_webhook_url_not_http_is_a_startup_error():
    node = Node(extra_env={"PARLEY_WEBHOOKS": webhooks_setting(("ftp://x", "secret", ["message.*"]))})
    try:
        process = node.spawn()
        try:
            status = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.stop()
            raise AssertionError(f"parley serve with an ftp:// webhook URL kept running\n{node.log_tail()}")
        output = node.log_text()
        assert status != 0, f"parley serve exited with 0 for an ftp:// webhook URL\n{output}"
        assert "PARLEY_WEBHOOKS" in output, f"the start-up error does not name PARLEY_WEBHOOKS:\n{output}"
        print(f"exit {status}: {output.strip()[-300:]}")
    finally:
        node.stop()
        shutil.rmtree(node.dir, ignore_errors=True)
