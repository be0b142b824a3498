"""The Kafka event stream of the real binary, read back by an outside Kafka consumer.

What it proves, for someone who consumes `<prefix>messages` instead of Parley's database:

- every message a user sent (over REST or WebSocket, a thousand at once, on SQLite and on
  PostgreSQL) shows up as a `message.created` event that validates against the published JSON
  Schemas, keyed by its conversation, with the `parley-event-type` header, carrying the message
  exactly as the REST API returns it; after de-duplication by event id each conversation's seqs
  arrive in order, 1..n, with no gap;
- while every broker is down chat goes on (each send is acknowledged as usual), `/ready` stays 200
  and says `"stream": "degraded"`, and once the brokers are back everything sent before, during and
  after the outage is in the topic, in order, and `/ready` says `"stream": "ok"` again (also when
  nothing was sent during the outage);
- a node killed with SIGKILL while events wait in its outbox (brokers down) loses none: after a
  restart on the same database every acknowledged message is in the topic, a repeat is only ever
  the same event id with the same value, and each conversation is in seq order with no gap;
- a node whose brokers cannot be reached at all still starts, serves and says so;
- a Kafka property librdkafka refuses does not stop the node: chat goes on, the log names the
  property (never its value: values may be secrets) and the stream stays degraded.

Needs a binary built with `--traits Kafka` (PARLEY_BIN, default .build/debug/parley) and a Kafka
cluster in PARLEY_TEST_KAFKA_BROKERS (`eval "$(scripts/kafka-mock.sh start)"`); the outage test also
needs the mock (PARLEY_TEST_KAFKA_MOCK_PID) and the PostgreSQL variant PARLEY_TEST_POSTGRES_URL.
Without them the tests are skipped, or fail with PARLEY_TEST_REQUIRE_ALL=1. Each test publishes
under a topic prefix of its own, so no test reads another's records.
"""

import asyncio
import collections
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PARLEY_BIN", os.path.join(ROOT, ".build", "debug", "parley"))
BROKERS = os.environ.get("PARLEY_TEST_KAFKA_BROKERS", "")
REQUIRE_ALL = os.environ.get("PARLEY_TEST_REQUIRE_ALL", "0") == "1"
OUTAGE_SECONDS = float(os.environ.get("PARLEY_STREAM_OUTAGE_SECONDS", "20"))

if not BROKERS:
    if REQUIRE_ALL:
        pytest.fail("PARLEY_TEST_KAFKA_BROKERS is not set (eval \"$(scripts/kafka-mock.sh start)\"), "
                    "and PARLEY_TEST_REQUIRE_ALL=1 forbids skipping the stream tests", pytrace=False)
    pytest.skip("PARLEY_TEST_KAFKA_BROKERS is not set (eval \"$(scripts/kafka-mock.sh start)\")", allow_module_level=True)

import jsonschema  # noqa: E402  (after the skip: only needed when the suite runs)
import websockets  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

MILLISECOND_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def skip_or_fail(reason):
    if REQUIRE_ALL:
        pytest.fail(f"{reason}, and PARLEY_TEST_REQUIRE_ALL=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def unique(prefix):
    return prefix + uuid.uuid4().hex[:8]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the node -------------------------------------------------------------------------------------


class Node:
    """One `parley serve` on a free port, with its own data directory, node id and topic prefix;
    its output goes to a file that is printed when the test fails inside the `with` block.

    `directory`, `node_id` and `topic_prefix` take over those of an earlier Node (a restart of the
    same node: its database, its log file, the same topic); by default each is new."""

    def __init__(self, brokers=BROKERS, store=None, extra_env=None, directory=None, node_id=None, topic_prefix=None):
        if not os.access(BIN, os.X_OK):
            pytest.fail(f"no parley binary at {BIN} (swift build --build-tests --traits Kafka)", pytrace=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/api/v1/ws"
        self.node_id = node_id or unique("node-")
        self.topic_prefix = topic_prefix or unique("t") + "."
        self.dir = directory or tempfile.mkdtemp(prefix="parley-stream-")
        self.log_path = os.path.join(self.dir, "parley.log")
        self.process = None
        # Only our settings: a PARLEY_* of the caller's shell must not change what is tested.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") or k.startswith("PARLEY_TEST_")}
        env.update(
            PARLEY_BCRYPT_COST="4",
            PARLEY_RATE_LIMITS="false",
            PARLEY_NODE_ID=self.node_id,
            PARLEY_JWT_SECRET="stream-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
            PARLEY_KAFKA_TOPIC_PREFIX=self.topic_prefix,
        )
        if brokers:
            env["PARLEY_KAFKA_BROKERS"] = brokers
        if store:
            env["PARLEY_STORE"] = store
        env.update(extra_env or {})
        self.env = env

    @property
    def messages_topic(self):
        return self.topic_prefix + "messages"

    def command(self):
        return [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", os.path.join(self.dir, "data"), "--log-format", "json"]

    def spawn(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir)
        return self.process

    def start(self, timeout=60):
        """Starts the node and returns once /ready answers 200."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"parley exited with {self.process.returncode} while starting\n{self.log_tail()}")
            try:
                status, _ = self.ready()
                if status == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"parley did not become ready within {timeout} s\n{self.log_tail()}")

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after `timeout`; returns (exit status, seconds it took, whether it
        had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return (self.process.returncode if self.process else None), 0.0, False
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout)
            return status, time.monotonic() - began, False
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return self.process.returncode, time.monotonic() - began, True

    def log_text(self):
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        """The JSON log lines as objects (anything else, e.g. a start-up error, as {"msg": line})."""
        lines = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
                lines.append(entry if isinstance(entry, dict) else {"msg": line})
            except ValueError:
                lines.append({"msg": line})
        return lines

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return f"--- {self.log_path} (last {min(lines, len(text))} of {len(text)} lines) ---\n" + "\n".join(text[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, kind, error, traceback):
        try:
            self.stop()
        finally:
            if kind is not None:
                # Printed during the test, so pytest shows it with the failure.
                print(self.log_tail(150))
                print(f"(node files kept in {self.dir})")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # --- HTTP ---

    def request(self, method, path, token=None, body=None, timeout=15):
        """Returns (status, JSON body or None, headers)."""
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

    def ready(self):
        status, reply, _ = self.request("GET", "/ready", timeout=5)
        return status, reply

    def wait_for_stream(self, state, timeout):
        """Polls /ready until checks.stream == state. Every answer must be 200: the stream never
        makes the node unready. Returns the /ready bodies seen."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            status, reply = self.ready()
            seen.append(reply)
            assert status == 200, f"/ready answered {status} {reply}: the stream must not fail readiness"
            if (reply.get("checks") or {}).get("stream") == state:
                return seen
            assert self.process.poll() is None, "parley exited"
            if time.monotonic() > deadline:
                raise AssertionError(f"/ready did not report stream {state!r} within {timeout} s; last: {reply}")
            time.sleep(0.2)

    def register(self):
        name = unique("u")
        reply = self.api("POST", "/api/v1/auth/register",
                         body={"username": name, "email": f"{name}@example.com", "password": "stream-password-1"}, expect=(201,))
        return reply["user"]["id"], reply["accessToken"]

    def group(self, token, name, member_ids):
        reply = self.api("POST", "/api/v1/conversations", token,
                         {"type": "group", "name": name, "memberIds": member_ids}, expect=(201,))
        return reply["conversation"]["id"]

    def history(self, token, conversation):
        """Every message of the conversation, as GET …/messages returns it, by id."""
        messages, after = {}, 0
        while True:
            page = self.api("GET", f"/api/v1/conversations/{conversation}/messages?after={after}&limit=200", token)
            for message in page["messages"]:
                messages[message["id"]] = message
                after = message["seq"]
            if not page["hasMore"] or not page["messages"]:
                return messages

    def send_rest(self, token, conversation, body, client_msg_id=None, retries=True):
        """POSTs a message; returns the stored message. A 429/503 (nothing stored) is retried after
        its hint when `retries`, as clients are told to."""
        payload = {"body": body}
        if client_msg_id:
            payload["clientMsgId"] = client_msg_id
        for _ in range(50):
            status, reply, headers = self.request("POST", f"/api/v1/conversations/{conversation}/messages", token, payload)
            if status == 201:
                return reply["message"]
            if retries and status in (429, 503):
                time.sleep(min(float(headers.get("Retry-After") or 0.2), 1.0))
                continue
            raise AssertionError(f"send to {conversation}: {status} {reply}")
        raise AssertionError(f"send to {conversation} kept being refused")


# --- the outside consumer -------------------------------------------------------------------------


class Record:
    __slots__ = ("partition", "offset", "key", "value", "headers")

    def __init__(self, message):
        self.partition = message.partition()
        self.offset = message.offset()
        self.key = message.key().decode() if message.key() is not None else None
        self.value = message.value()
        self.headers = [(name, value.decode() if value is not None else None) for name, value in (message.headers() or [])]


class TopicReader:
    """Reads a topic from the beginning of every partition with confluent-kafka (assigned
    partitions, no group rebalancing), keeping every record."""

    def __init__(self, topic):
        self.topic = topic
        self.records = []
        self.errors = []
        self.consumer = Consumer({
            "bootstrap.servers": BROKERS,
            "group.id": unique("parley-stream-test-"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        })
        self.assigned = False

    def _assign(self):
        metadata = self.consumer.list_topics(self.topic, timeout=5)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)])
        self.assigned = True
        return True

    def read_until(self, done, timeout, what):
        """Consumes until done(records) or the deadline; fails naming `what` at the deadline."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.topic}: timed out after {timeout} s waiting for {what}; {len(self.records)} records read, "
                    f"partitions assigned: {self.assigned}, consumer errors: {self.errors[-5:]}")
            if not self.assigned:
                try:
                    if not self._assign():
                        time.sleep(0.2)
                        continue
                except Exception as error:  # KafkaException while the topic does not exist yet
                    self.errors.append(str(error))
                    time.sleep(0.2)
                    continue
            for message in self.consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(message.error()))
                    continue
                self.records.append(Record(message))
        return self.records

    def close(self):
        self.consumer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def distinct_event_ids(records):
    ids = set()
    for record in records:
        try:
            ids.add(json.loads(record.value)["id"])
        except (ValueError, KeyError, TypeError):
            pass
    return ids


def message_ids_in(records):
    ids = set()
    for record in records:
        try:
            ids.add(json.loads(record.value)["data"]["message"]["id"])
        except (ValueError, KeyError, TypeError):
            pass
    return ids


_validator = None


def message_created_validator():
    """docs/events/message.created.schema.json, its $refs (envelope, message) resolved from the
    repository, with `format` (uuid, date-time) checked."""
    global _validator
    if _validator is None:
        schemas = {}
        for name in ("envelope.schema.json", "message.schema.json", "message.created.schema.json"):
            with open(os.path.join(ROOT, "docs", "events", name)) as file:
                schemas[name] = json.load(file)
        for schema in schemas.values():
            jsonschema.Draft202012Validator.check_schema(schema)
        registry = Registry().with_resources(
            (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
        _validator = jsonschema.Draft202012Validator(
            schemas["message.created.schema.json"], registry=registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return _validator


def check_events(records, node_id):
    """Checks every record as a consumer would rely on it and returns, per conversation, its
    events in topic order with re-sends (a repeated event id) dropped."""
    validator = message_created_validator()
    problems = []
    first_value = {}
    by_conversation = collections.defaultdict(list)
    partitions = collections.defaultdict(set)
    # Topic order: one conversation lives on one partition, so partition then offset.
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        where = f"partition {record.partition} offset {record.offset}"
        try:
            envelope = json.loads(record.value)
        except ValueError as error:
            problems.append(f"{where}: value is not JSON ({error}): {record.value[:200]!r}")
            continue
        errors = sorted(validator.iter_errors(envelope), key=lambda e: list(e.absolute_path))
        if errors:
            problems.append(f"{where}: not a valid message.created event: "
                            + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:3]))
            continue
        types = [value for name, value in record.headers if name == "parley-event-type"]
        if types != ["message.created"]:
            problems.append(f"{where}: parley-event-type headers {types}, headers {record.headers}")
        if record.key != envelope["conversationId"]:
            problems.append(f"{where}: key {record.key!r} is not the conversationId {envelope['conversationId']}")
        message = envelope["data"]["message"]
        if (message["conversationId"], message["seq"]) != (envelope["conversationId"], envelope["seq"]):
            problems.append(f"{where}: envelope conversationId/seq {envelope['conversationId']}/{envelope['seq']} "
                            f"differ from the message's {message['conversationId']}/{message['seq']}")
        if envelope["node"] != node_id:
            problems.append(f"{where}: node {envelope['node']!r}, expected {node_id!r}")
        if not MILLISECOND_UTC.match(envelope["occurredAt"]):
            problems.append(f"{where}: occurredAt {envelope['occurredAt']!r} is not RFC 3339 UTC with milliseconds")
        if envelope["id"] in first_value:
            if first_value[envelope["id"]] != record.value:
                problems.append(f"{where}: event {envelope['id']} repeated with a different value")
            continue
        first_value[envelope["id"]] = record.value
        by_conversation[envelope["conversationId"]].append(envelope)
        partitions[envelope["conversationId"]].add(record.partition)
    assert not problems, f"{len(problems)} bad records, e.g.:\n" + "\n".join(problems[:10])
    split = {c: sorted(p) for c, p in partitions.items() if len(p) > 1}
    assert not split, f"conversations spread over several partitions: {split}"
    return by_conversation


def assert_gapless_in_order(by_conversation, expected_counts):
    """Per conversation the seqs, in topic order after dropping re-sends, are exactly 1..n."""
    wrong = {}
    for conversation, count in expected_counts.items():
        seqs = [event["seq"] for event in by_conversation.get(conversation, [])]
        if seqs != list(range(1, count + 1)):
            wrong[conversation] = seqs
    assert not wrong, "seqs out of order, missing or extra (conversation: seqs in topic order): " + "; ".join(
        f"{c}: {s}" for c, s in list(wrong.items())[:3])
    extra = set(by_conversation) - set(expected_counts)
    assert not extra, f"events for conversations nobody sent to here: {sorted(extra)[:5]}"


# --- WebSocket senders ----------------------------------------------------------------------------


async def send_over_socket(node, token, frames, results, failures, timeout=120):
    """Sends the `send` frames pipelined on one socket and waits for every ack; a retryable error
    (with retryAfterSeconds) is resent with the same clientMsgId after its hint."""
    async with websockets.connect(node.ws, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_queue=None, open_timeout=20) as sock:
        hello = json.loads(await asyncio.wait_for(sock.recv(), 20))
        assert hello["type"] == "hello", hello
        waiting = {frame["clientMsgId"]: frame for frame in frames}
        all_acked = asyncio.Event()
        if not waiting:
            all_acked.set()

        resends = set()  # keeps the resend tasks referenced until they ran

        async def resend(frame, delay):
            await asyncio.sleep(delay)
            await sock.send(json.dumps(frame))

        async def read():
            async for raw in sock:
                frame = json.loads(raw)
                kind, ref = frame.get("type"), frame.get("clientMsgId") or frame.get("ref")
                if kind == "ack" and ref in waiting:
                    results[ref] = frame["message"]
                    del waiting[ref]
                elif kind == "error" and ref in waiting:
                    if frame.get("retryAfterSeconds") is not None:
                        task = asyncio.create_task(resend(waiting[ref], min(float(frame["retryAfterSeconds"]), 1.0)))
                        resends.add(task)
                        task.add_done_callback(resends.discard)
                        continue
                    failures.append(frame)
                    del waiting[ref]
                else:
                    continue
                if not waiting:
                    all_acked.set()

        reader = asyncio.create_task(read())
        for frame in frames:
            await sock.send(json.dumps(frame))
        acked = asyncio.create_task(all_acked.wait())
        await asyncio.wait({acked, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
        acked.cancel()
        assert not waiting, (f"{len(waiting)} sends on one socket never acknowledged "
                             f"(close code {sock.close_code}), e.g. {list(waiting)[:3]}")


# --- tests ----------------------------------------------------------------------------------------

USERS = 10
CONVERSATIONS = 20
MESSAGES = 1000


def thousand_messages_in_order(node):
    users = [node.register() for _ in range(USERS)]
    # Conversation i: user i % 10 creates it with one or two others (groups of 2–3).
    members = {}
    for i in range(CONVERSATIONS):
        ids = [i % USERS, (i + 1) % USERS] + ([(i + 3) % USERS] if i % 2 == 0 else [])
        conversation = node.group(users[ids[0]][1], f"Stream {i}", [users[j][0] for j in ids[1:]])
        members[conversation] = ids
    conversations = list(members)

    # Message k goes to conversation k % 20 from one of its members; blocks of 20 alternate between
    # REST and WebSocket, so every conversation gets both, interleaved. Bodies are unique and not
    # only ASCII; some REST sends carry a clientMsgId, some none (null in the event).
    rest_items, ws_frames = [], collections.defaultdict(list)
    for k in range(MESSAGES):
        conversation = conversations[k % CONVERSATIONS]
        sender = members[conversation][(k // CONVERSATIONS) % len(members[conversation])]
        if (k // CONVERSATIONS) % 2 == 0:
            body = f"message {k} über REST ✓"
            rest_items.append((users[sender][1], conversation, body, f"rest-{k}" if k % 3 == 0 else None))
        else:
            body = f"message {k} über WebSocket ✓"
            ws_frames[sender].append({"type": "send", "conversationId": conversation, "clientMsgId": f"ws-{k}", "body": body})
    assert len(rest_items) == MESSAGES // 2

    ws_results, ws_failures = {}, []

    async def send_everything():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            rest = [loop.run_in_executor(pool, node.send_rest, *item) for item in rest_items]
            sockets = [send_over_socket(node, users[u][1], frames, ws_results, ws_failures) for u, frames in ws_frames.items()]
            results = await asyncio.gather(*rest, *sockets)
        return results[:len(rest)]

    rest_results = asyncio.run(send_everything())
    assert not ws_failures, f"{len(ws_failures)} WebSocket sends refused, e.g. {ws_failures[:3]}"
    sent = {message["id"]: message for message in list(rest_results) + list(ws_results.values())}
    assert len(sent) == MESSAGES, f"{len(sent)} distinct messages acknowledged of {MESSAGES} sent"

    # What the REST API says was stored: the reference for the events' message objects.
    stored = {}
    expected_counts = {}
    for conversation, ids in members.items():
        history = node.history(users[ids[0]][1], conversation)
        stored.update(history)
        expected_counts[conversation] = len(history)
    assert set(stored) == set(sent), "history and acknowledgements disagree"

    with TopicReader(node.messages_topic) as reader:
        records = reader.read_until(lambda rs: len(distinct_event_ids(rs)) >= MESSAGES, timeout=60,
                                    what=f"{MESSAGES} distinct events")
    by_conversation = check_events(records, node.node_id)
    events = {event["data"]["message"]["id"]: event for events in by_conversation.values() for event in events}
    missing = set(sent) - set(events)
    assert not missing, f"{len(missing)} sent messages have no event, e.g. {sorted(missing)[:3]}"
    assert len(events) == MESSAGES, f"{len(events) - MESSAGES} events for messages nobody sent"
    assert_gapless_in_order(by_conversation, expected_counts)
    different = [(stored[i], events[i]["data"]["message"]) for i in sent if events[i]["data"]["message"] != stored[i]]
    assert not different, f"{len(different)} events carry a message unlike GET …/messages, e.g. REST {different[0][0]} vs event {different[0][1]}"


def test_every_message_in_order_sqlite():
    with Node() as node:
        thousand_messages_in_order(node)


def psql(url, sql):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True, capture_output=True, timeout=60)


def test_every_message_in_order_postgres():
    url = os.environ.get("PARLEY_TEST_POSTGRES_URL")
    if not url:
        skip_or_fail("PARLEY_TEST_POSTGRES_URL is not set (eval \"$(scripts/services.sh start)\")")
    if not shutil.which("psql"):
        skip_or_fail("psql is not installed")
    # A database of its own, dropped afterwards.
    parts = urllib.parse.urlsplit(url)
    database = unique("parley_stream_")
    admin = parts._replace(path="/postgres").geturl()
    psql(admin, f'CREATE DATABASE "{database}"')
    try:
        with Node(store=parts._replace(path="/" + database).geturl()) as node:
            thousand_messages_in_order(node)
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def kafka_mock(action):
    """scripts/kafka-mock.sh down|up: returns once the mock confirmed (it reads PARLEY_KAFKA_MOCK_DIR
    from our environment, as scripts/test left it)."""
    result = subprocess.run([os.path.join(ROOT, "scripts", "kafka-mock.sh"), action], cwd=ROOT, env=os.environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kafka-mock.sh {action}: {result.stdout}{result.stderr}"


class SteadySender(threading.Thread):
    """Sends a message over REST about ten times a second, rotating conversations and senders,
    until stopped; every send must be acknowledged (201) on the first try, and promptly."""

    def __init__(self, node, plan, tag):
        super().__init__(daemon=True)
        self.node, self.plan, self.tag = node, plan, tag  # plan: [(token, conversation)]
        self.stopping = threading.Event()
        self.sent = []  # (message, seconds it took)
        self.failures = []

    def run(self):
        i = 0
        while not self.stopping.is_set():
            token, conversation = self.plan[i % len(self.plan)]
            began = time.monotonic()
            try:
                message = self.node.send_rest(token, conversation, f"{self.tag} {i}", f"{self.tag}-{i}", retries=False)
                self.sent.append((message, time.monotonic() - began))
            except Exception as error:  # noqa: BLE001 — recorded, asserted by the test
                self.failures.append(f"{self.tag}-{i}: {error}")
            i += 1
            self.stopping.wait(0.1)

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)


def test_brokers_down_chat_goes_on():
    if not os.environ.get("PARLEY_TEST_KAFKA_MOCK_PID"):
        skip_or_fail("the brokers are not the mock cluster (PARLEY_TEST_KAFKA_MOCK_PID unset), so they cannot be taken down")
    with Node() as node:
        (alice, alice_token), (bob, bob_token), (carol, carol_token) = [node.register() for _ in range(3)]
        conversations = [node.group(alice_token, "Outage 1", [bob]), node.group(bob_token, "Outage 2", [alice, carol]),
                         node.group(carol_token, "Outage 3", [alice])]
        plan = [(alice_token, conversations[0]), (bob_token, conversations[1]), (carol_token, conversations[2]),
                (bob_token, conversations[0]), (alice_token, conversations[1]), (alice_token, conversations[2])]
        sent = []

        # Before: the stream works.
        node.wait_for_stream("ok", timeout=15)
        for i in range(12):
            token, conversation = plan[i % len(plan)]
            sent.append(node.send_rest(token, conversation, f"before {i}", f"before-{i}"))
        with TopicReader(node.messages_topic) as reader:
            before_ids = {m["id"] for m in sent}
            reader.read_until(lambda rs: before_ids <= message_ids_in(rs), timeout=30, what="the messages sent before the outage")

        # Every broker down; a steady sender goes on for the outage.
        steady = SteadySender(node, plan, "during")
        down_at = None
        try:
            kafka_mock("down")
            down_at = time.monotonic()
            steady.start()
            node.wait_for_stream("degraded", timeout=max(15.0, OUTAGE_SECONDS))
            degraded_after = time.monotonic() - down_at
            # The rest of the outage: /ready stays 200 and degraded throughout, chat goes on.
            while time.monotonic() - down_at < OUTAGE_SECONDS:
                status, reply = node.ready()
                assert status == 200, f"/ready answered {status} {reply} while the brokers were down"
                assert reply["checks"].get("stream") == "degraded", f"/ready during the outage: {reply}"
                assert not steady.failures, f"sends failed while the brokers were down: {steady.failures[:3]}"
                assert steady.is_alive()
                time.sleep(0.5)
        finally:
            steady.stop()
            if down_at is not None:
                kafka_mock("up")
        assert not steady.failures, f"sends failed while the brokers were down: {steady.failures[:3]}"
        during = [message for message, _ in steady.sent]
        slowest = max(seconds for _, seconds in steady.sent)
        assert len(during) >= OUTAGE_SECONDS * 3, f"only {len(during)} sends acknowledged in a {OUTAGE_SECONDS:.0f} s outage"
        assert slowest < 5, f"a send took {slowest:.1f} s while the brokers were down"
        sent += during

        # After: more sends right away, while the backlog drains.
        for i in range(12):
            token, conversation = plan[i % len(plan)]
            sent.append(node.send_rest(token, conversation, f"after {i}", f"after-{i}"))

        # Everything is in the topic, each conversation in seq order with nothing missing.
        sent_ids = {m["id"] for m in sent}
        with TopicReader(node.messages_topic) as reader:
            records = reader.read_until(lambda rs: sent_ids <= message_ids_in(rs), timeout=90,
                                        what=f"all {len(sent_ids)} messages sent before, during and after the outage")
        by_conversation = check_events(records, node.node_id)
        counts = collections.Counter(m["conversationId"] for m in sent)
        assert_gapless_in_order(by_conversation, counts)
        events = {e["data"]["message"]["id"]: e["data"]["message"] for es in by_conversation.values() for e in es}
        assert all(events[m["id"]] == m for m in sent), "an event's message differs from what the send returned"

        node.wait_for_stream("ok", timeout=30)
        print(f"stream degraded {degraded_after:.1f} s after the brokers went down; {len(during)} sends during the outage, "
              f"slowest {slowest:.2f} s")


def test_stream_ok_again_when_brokers_return_to_an_idle_node():
    # An outage while nobody writes: once the brokers are back, /ready must say so by itself, not
    # only after the next message happens to be produced.
    if not os.environ.get("PARLEY_TEST_KAFKA_MOCK_PID"):
        skip_or_fail("the brokers are not the mock cluster (PARLEY_TEST_KAFKA_MOCK_PID unset), so they cannot be taken down")
    with Node() as node:
        (_, alice_token), (bob, _) = node.register(), node.register()
        conversation = node.group(alice_token, "Quiet", [bob])
        message = node.send_rest(alice_token, conversation, "before a quiet outage", "quiet-1")
        with TopicReader(node.messages_topic) as reader:
            reader.read_until(lambda rs: message["id"] in message_ids_in(rs), timeout=30, what="the message")
        node.wait_for_stream("ok", timeout=15)
        down = False
        try:
            kafka_mock("down")
            down = True
            node.wait_for_stream("degraded", timeout=20)
        finally:
            if down:
                kafka_mock("up")
        node.wait_for_stream("ok", timeout=30)


def test_unreachable_brokers_at_start():
    with Node(brokers="127.0.0.1:1") as node:
        _, token = node.register()
        other, _ = node.register()
        conversation = node.group(token, "Nobody listens", [other])
        sent = []
        for i in range(5):
            began = time.monotonic()
            sent.append(node.send_rest(token, conversation, f"unreachable {i}", f"unreachable-{i}", retries=False))
            assert time.monotonic() - began < 5, "a send waited on the unreachable brokers"
        assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]
        assert set(node.history(token, conversation)) == {m["id"] for m in sent}

        node.wait_for_stream("degraded", timeout=20)

        def about_the_stream(entry):
            text = json.dumps(entry).lower()
            return entry.get("level") in ("warning", "error", "critical") and ("kafka" in text or "stream" in text)

        lines = [entry for entry in node.log_lines() if about_the_stream(entry)]
        assert lines, "no warning in the log about the event stream / Kafka"
        print("stream log lines:", *[json.dumps(entry) for entry in lines[:3]], sep="\n  ")
        assert node.process.poll() is None, f"parley exited with {node.process.returncode}"

        # And it can still be stopped (an operator's SIGTERM must not hang on the unreachable brokers).
        status, took, killed = node.stop(timeout=30)
        assert not killed, f"parley did not exit within 30 s of SIGTERM while the brokers were unreachable"
        assert status == 0, f"parley exited with {status} after SIGTERM"


def assert_serves_with_refused_configuration(node, property_name, secret):
    """A Kafka configuration librdkafka refuses: the node still starts and serves chat, says in its
    log which property is wrong (never its value), reports the stream degraded, and keeps the events
    for when the configuration is fixed."""
    with node:
        _, token = node.register()
        other, _ = node.register()
        conversation = node.group(token, "Misconfigured", [other])
        sent = [node.send_rest(token, conversation, f"kept {i}", f"kept-{i}", retries=False) for i in range(3)]
        assert [m["seq"] for m in sent] == [1, 2, 3], "chat works without the stream"
        node.wait_for_stream("degraded", timeout=20)
        status, body = node.ready()
        assert status == 200, f"/ready failed the node for a stream problem: {status} {body}"
        output = node.log_text()
        assert property_name in output, f"the log does not name {property_name}"
        assert secret not in output, "a property value (possibly a secret) appears in the log"
        assert node.process.poll() is None, f"parley exited with {node.process.returncode}"
        status, _, killed = node.stop(timeout=30)
        assert not killed and status == 0, f"SIGTERM: exit {status}, killed {killed}"


def test_unknown_kafka_property_is_a_clear_log_line_and_a_degraded_stream():
    # Never a crash loop: the node serves chat, says what is wrong, and keeps the events.
    node = Node(extra_env={"PARLEY_KAFKA_PROPERTY_NO_SUCH_THING": "1",
                           "PARLEY_KAFKA_PROPERTY_SASL_PASSWORD": "hunter2-secret"})
    assert_serves_with_refused_configuration(node, "no.such.thing", "hunter2-secret")


def test_invalid_kafka_property_value_is_named_but_not_shown():
    # librdkafka's own message for a bad value quotes the value; Parley must not pass that on.
    node = Node(extra_env={"PARLEY_KAFKA_PROPERTY_COMPRESSION_TYPE": "hunter2-secret"})
    assert_serves_with_refused_configuration(node, "compression.type", "hunter2-secret")


def outbox_message_ids(node):
    """The message ids of the events waiting in a SQLite node's outbox, oldest first, read with a
    read-only connection beside the running node (WAL: it neither blocks nor changes anything)."""
    path = os.path.join(node.dir, "data", "parley.sqlite")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute("SELECT envelope FROM outbox WHERE type = 'message.created' ORDER BY position").fetchall()
    finally:
        connection.close()
    return [json.loads(envelope)["data"]["message"]["id"] for (envelope,) in rows]


KILL_CONVERSATIONS = 5


def test_kill_9_with_pending_events_loses_nothing():
    # The outbox's promise under the harshest stop: SIGKILL (no graceful relay, no producer flush)
    # while events wait for brokers that are down. After a restart on the same database every
    # acknowledged message is in the topic; a repeat is only a re-send of the same event id with
    # the same value; per conversation, after dropping repeats, the seqs are 1..n in order.
    if not os.environ.get("PARLEY_TEST_KAFKA_MOCK_PID"):
        skip_or_fail("the brokers are not the mock cluster (PARLEY_TEST_KAFKA_MOCK_PID unset), so they cannot be taken down")
    began = time.monotonic()
    with Node() as node:
        users = [node.register() for _ in range(KILL_CONVERSATIONS)]
        # Conversation i: user i and user i+1, who take turns sending to it.
        senders = {}
        for i in range(KILL_CONVERSATIONS):
            other_id, other_token = users[(i + 1) % KILL_CONVERSATIONS]
            senders[node.group(users[i][1], f"Kill {i}", [other_id])] = (users[i][1], other_token)
        conversations = list(senders)
        sent = []  # every acknowledged message, before and after the kill

        def send_rounds(to, tag, rounds):
            """`rounds` REST sends to every conversation, interleaved; each acknowledged at once."""
            messages = []
            for r in range(rounds):
                for c, conversation in enumerate(conversations):
                    token = senders[conversation][r % 2]
                    messages.append(to.send_rest(token, conversation, f"{tag} {r}.{c} ✓", f"{tag}-{r}-{c}", retries=False))
            return messages

        # Before: the stream works and these are in the topic.
        node.wait_for_stream("ok", timeout=15)
        before = send_rounds(node, "before", 2)
        sent += before
        with TopicReader(node.messages_topic) as reader:
            before_ids = {m["id"] for m in before}
            reader.read_until(lambda rs: before_ids <= message_ids_in(rs), timeout=30, what="the messages sent before the kill")

        # Every broker down: the next sends are acknowledged but their events can only wait in the
        # outbox. 50 over REST and 10 over WebSocket (two per conversation, from its creator).
        down = False
        try:
            kafka_mock("down")
            down = True
            pending = send_rounds(node, "pending", 10)
            ws_results, ws_failures = {}, []
            frames = {i: [{"type": "send", "conversationId": conversation, "clientMsgId": f"ws-{i}-{j}",
                           "body": f"pending over WebSocket {i}.{j} ✓"} for j in range(2)]
                      for i, conversation in enumerate(conversations)}

            async def send_over_sockets():
                await asyncio.gather(*[send_over_socket(node, users[i][1], frames[i], ws_results, ws_failures, timeout=30)
                                       for i in frames])

            asyncio.run(send_over_sockets())
            assert not ws_failures, f"WebSocket sends refused while the brokers were down: {ws_failures[:3]}"
            assert len(ws_results) == 2 * KILL_CONVERSATIONS, f"{len(ws_results)} WebSocket sends acknowledged"
            pending += list(ws_results.values())
            sent += pending
            # The relay has tried and is waiting on the brokers; the events are in the outbox.
            node.wait_for_stream("degraded", timeout=20)
            waiting = outbox_message_ids(node)
            not_waiting = {m["id"] for m in pending} - set(waiting)
            assert not not_waiting, f"{len(not_waiting)} events sent while the brokers were down are not in the outbox"

            node.process.send_signal(signal.SIGKILL)
            status = node.process.wait(timeout=10)
            assert status == -signal.SIGKILL, f"parley exited with {status} before the SIGKILL"
            killed_at = time.monotonic()
        finally:
            if down:
                kafka_mock("up")

        # The same node again: its database, node id and topic prefix, and its JWT secret (the
        # users' tokens stay valid), on a new port.
        restarted = Node(directory=node.dir, node_id=node.node_id, topic_prefix=node.topic_prefix,
                         extra_env={"PARLEY_JWT_SECRET": node.env["PARLEY_JWT_SECRET"]})
        try:
            restarted.start()
            ready_after = time.monotonic() - killed_at
            # More sends right away, while the old backlog drains: they must come after it.
            sent += send_rounds(restarted, "after", 2)

            # Every acknowledged send survived the kill in the database...
            stored = {}
            for conversation, (token, _) in senders.items():
                stored.update(restarted.history(token, conversation))
            lost = {m["id"] for m in sent} - set(stored)
            assert not lost, f"{len(lost)} acknowledged messages are gone from the database after the SIGKILL"
            assert len(stored) == len(sent), f"{len(stored) - len(sent)} stored messages nobody sent"

            # ...and in the topic, in order, repeats only ever the same event.
            sent_ids = {m["id"] for m in sent}
            with TopicReader(restarted.messages_topic) as reader:
                records = reader.read_until(lambda rs: sent_ids <= message_ids_in(rs), timeout=60,
                                            what=f"all {len(sent_ids)} messages sent before and after the SIGKILL")
            drained_after = time.monotonic() - killed_at
            event_ids_per_message = collections.defaultdict(set)
            for record in records:
                envelope = json.loads(record.value)
                event_ids_per_message[envelope["data"]["message"]["id"]].add(envelope["id"])
            two_events = {m: ids for m, ids in event_ids_per_message.items() if len(ids) > 1}
            assert not two_events, f"{len(two_events)} messages published as several different events, e.g. {list(two_events.items())[:2]}"
            by_conversation = check_events(records, node.node_id)
            counts = collections.Counter(m["conversationId"] for m in sent)
            assert counts == {c: 2 + 10 + 2 + 2 for c in conversations}, counts  # before, while down (REST, WS), after
            assert_gapless_in_order(by_conversation, counts)
            events = {e["data"]["message"]["id"]: e["data"]["message"] for es in by_conversation.values() for e in es}
            assert set(events) == sent_ids, f"{len(set(events) - sent_ids)} events for messages nobody sent"
            different = [(stored[i], events[i]) for i in sent_ids if events[i] != stored[i]]
            assert not different, f"{len(different)} events carry a message unlike GET …/messages, e.g. {different[0]}"
            repeats = len(records) - len(distinct_event_ids(records))

            # And the restarted node stops cleanly.
            status, took, killed = restarted.stop(timeout=30)
            assert not killed and status == 0, f"SIGTERM after the restart: exit {status}, killed {killed}"
        finally:
            restarted.stop()
    print(f"{len(waiting)} events in the outbox at the SIGKILL ({len(pending)} sent while the brokers were down); "
          f"ready again {ready_after:.1f} s after the kill, all {len(sent_ids)} messages in the topic after {drained_after:.1f} s; "
          f"{len(records)} records, {repeats} repeated; stop took {took:.1f} s; test {time.monotonic() - began:.1f} s")


# --- two nodes sharing the outbox on PostgreSQL ---------------------------------------------------

SHARDS = 64
LEASE_SECONDS = 3
RELAY_CONVERSATIONS = 20
RELAY_ROUNDS = 10
RELAY_PER_ROUND = 60  # three per conversation each round: 600 messages in all
RELAY_KILL_ROUND = 5  # the victim is killed while this round is being sent


def psql_rows(url, sql):
    """The rows of a query, each a list of its columns as text."""
    result = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-F", "\t", "-c", sql],
                            check=True, capture_output=True, text=True, timeout=60)
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def live_leases(url):
    """{node id: number of outbox shards it holds an unexpired lease on} (a free shard's node is '')."""
    rows = psql_rows(url, "SELECT node, count(*) FROM outbox_leases WHERE expires_at > now() AND node <> '' GROUP BY node")
    return {node: int(count) for node, count in rows}


def wait_for_leases(url, done, timeout, what):
    """Polls the live leases until done(leases); returns them and the seconds it took."""
    began = time.monotonic()
    while True:
        leases = live_leases(url)
        if done(leases):
            return leases, time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"no {what} within {timeout} s; live leases per node: {leases or 'none'}")
        time.sleep(0.2)


class OneOf:
    """Equal to any of `values`: check_events' `node` check, for events made by either of two nodes."""

    def __init__(self, values):
        self.values = frozenset(values)

    def __eq__(self, other):
        return other in self.values

    def __ne__(self, other):
        return other not in self.values

    __hash__ = None

    def __repr__(self):
        return " or ".join(repr(value) for value in sorted(self.values))


def send_rest_allowing_replay(node, token, conversation, body, client_msg_id):
    """A REST send that may repeat one whose answer was lost: 201 (stored now) or 200 (the
    clientMsgId was already stored, the original comes back). Returns (message, replayed)."""
    for _ in range(50):
        status, reply, headers = node.request("POST", f"/api/v1/conversations/{conversation}/messages", token,
                                              {"body": body, "clientMsgId": client_msg_id})
        if status in (200, 201):
            return reply["message"], status == 200
        if status in (429, 503):
            time.sleep(min(float(headers.get("Retry-After") or 0.2), 1.0))
            continue
        raise AssertionError(f"repeated send {client_msg_id} to {conversation}: {status} {reply}")
    raise AssertionError(f"repeated send {client_msg_id} to {conversation} kept being refused")


def test_two_nodes_relay_concurrently_on_postgres_one_killed():
    # Two nodes on one PostgreSQL database share the 64 outbox shards by lease, each producing only
    # the shards it holds; chat goes to both at once, through REST and WebSocket, and one node is
    # SIGKILLed in the middle. Its shards pass to the survivor once their leases expire. In the
    # topic: every stored message, nothing else, one event id per message, per conversation seqs
    # 1..n in order after dropping repeated event ids.
    url = os.environ.get("PARLEY_TEST_POSTGRES_URL")
    if not url:
        skip_or_fail("PARLEY_TEST_POSTGRES_URL is not set (eval \"$(scripts/services.sh start)\")")
    if not shutil.which("psql"):
        skip_or_fail("psql is not installed")
    began = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    database = unique("parley_stream_")
    admin = parts._replace(path="/postgres").geturl()
    db_url = parts._replace(path="/" + database).geturl()
    psql(admin, f'CREATE DATABASE "{database}"')
    try:
        # One database, one topic, one JWT secret (a token works on either node); its own node id and port each.
        shared = {"PARLEY_JWT_SECRET": "stream-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
                  "PARLEY_OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS)}
        prefix = unique("t") + "."
        first = Node(store=db_url, extra_env=shared, topic_prefix=prefix, node_id=unique("relay-a-"))
        second = Node(store=db_url, extra_env=shared, topic_prefix=prefix, node_id=unique("relay-b-"))
        with first, second:
            nodes = [first, second]
            survivor, victim = first, second
            node_ids = {first.node_id, second.node_id}

            # Both relay: each holds some of the shards.
            shared_leases, sharing_after = wait_for_leases(
                db_url, lambda ls: set(ls) == node_ids and all(n >= 1 for n in ls.values()), timeout=max(30, 10 * LEASE_SECONDS),
                what=f"lease on at least one shard for each of {sorted(node_ids)}")
            assert sum(shared_leases.values()) <= SHARDS, shared_leases

            users = [first.register() for _ in range(USERS)]
            members = {}
            for i in range(RELAY_CONVERSATIONS):
                ids = [i % USERS, (i + 1) % USERS] + ([(i + 3) % USERS] if i % 2 == 0 else [])
                conversation = nodes[i % 2].group(users[ids[0]][1], f"Relay {i}", [users[j][0] for j in ids[1:]])
                members[conversation] = ids
            conversations = list(members)

            # Message k: conversation k % 20, from one of its members, clientMsgId m-k. Block
            # b = k // 20 goes to node b % 2, over REST when (b // 2) is even, else WebSocket: each
            # conversation gets all four, and each round sends to every conversation through both nodes.
            plan = []  # per round: ([(k, node, token, conversation, body, clientMsgId)], {(node index, user): [frames]})
            for r in range(RELAY_ROUNDS):
                rest_items, ws_frames = [], collections.defaultdict(list)
                for k in range(r * RELAY_PER_ROUND, (r + 1) * RELAY_PER_ROUND):
                    conversation = conversations[k % RELAY_CONVERSATIONS]
                    block = k // RELAY_CONVERSATIONS
                    sender = members[conversation][block % len(members[conversation])]
                    if (block // 2) % 2 == 0:
                        rest_items.append((nodes[block % 2], users[sender][1], conversation, f"relay {k} über REST ✓", f"m-{k}"))
                    else:
                        ws_frames[(block % 2, sender)].append({"type": "send", "conversationId": conversation,
                                                               "clientMsgId": f"m-{k}", "body": f"relay {k} über WebSocket ✓"})
                plan.append((rest_items, ws_frames))
            total = RELAY_ROUNDS * RELAY_PER_ROUND

            killed = threading.Event()  # set just before the SIGKILL: a failure on the victim after it is expected
            acked = {}  # clientMsgId -> (message, id of the node that acknowledged it)
            ws_acked = {node.node_id: {} for node in nodes}  # per node: clientMsgId -> message
            ws_failures = []
            retried, replayed = set(), set()  # repeated on the survivor after the kill; of those, already stored
            at_kill = {}

            def acknowledged():
                return len(acked) + sum(len(results) for results in ws_acked.values())

            def send_rest_item(via, token, conversation, body, client_msg_id):
                if not (via is victim and killed.is_set()):
                    try:
                        acked[client_msg_id] = (via.send_rest(token, conversation, body, client_msg_id), via.node_id)
                        return
                    except AssertionError:
                        raise
                    except Exception:  # noqa: BLE001 — the connection, cut by the kill
                        if not (via is victim and killed.is_set()):
                            raise
                        retried.add(client_msg_id)
                message, again = send_rest_allowing_replay(survivor, token, conversation, body, client_msg_id)
                assert client_msg_id in retried or not again, f"{client_msg_id}: a first send answered as a replay"
                if again:
                    replayed.add(client_msg_id)
                acked[client_msg_id] = (message, survivor.node_id)

            async def send_ws_batch(via, token, frames):
                if not (via is victim and killed.is_set()):
                    try:
                        await send_over_socket(via, token, frames, ws_acked[via.node_id], ws_failures, timeout=60)
                        return
                    except Exception:  # noqa: BLE001 — the socket, closed or refused by the kill
                        if not (via is victim and killed.is_set()):
                            raise
                    frames = [frame for frame in frames if frame["clientMsgId"] not in ws_acked[via.node_id]]
                    retried.update(frame["clientMsgId"] for frame in frames)
                await send_over_socket(survivor, token, frames, ws_acked[survivor.node_id], ws_failures, timeout=60)

            async def kill_victim(round_start):
                # Once a third of this round is acknowledged: the rest is in flight or not yet sent.
                deadline = time.monotonic() + 20
                while acknowledged() < round_start + RELAY_PER_ROUND // 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                at_kill["leases"] = await asyncio.to_thread(live_leases, db_url)
                at_kill["acknowledged"] = acknowledged()
                killed.set()
                victim.process.send_signal(signal.SIGKILL)
                at_kill["time"] = time.monotonic()

            async def send_everything():
                loop = asyncio.get_running_loop()
                with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
                    for r, (rest_items, ws_frames) in enumerate(plan):
                        tasks = [loop.run_in_executor(pool, send_rest_item, *item) for item in rest_items]
                        tasks += [send_ws_batch(nodes[n], users[u][1], frames) for (n, u), frames in ws_frames.items()]
                        if r == RELAY_KILL_ROUND:
                            tasks.append(kill_victim(acknowledged()))
                        await asyncio.gather(*tasks)

            asyncio.run(send_everything())
            assert killed.is_set()
            assert set(at_kill["leases"]) == node_ids, \
                f"just before the kill not both nodes held leases ({at_kill['leases']}): they did not relay concurrently under load"
            status = victim.process.wait(timeout=10)
            assert status == -signal.SIGKILL, f"the victim exited with {status} before the SIGKILL"
            assert survivor.process.poll() is None, f"the survivor exited with {survivor.process.returncode}"
            assert not ws_failures, f"{len(ws_failures)} WebSocket sends refused, e.g. {ws_failures[:3]}"
            for node_id, results in ws_acked.items():
                acked.update((client_msg_id, (message, node_id)) for client_msg_id, message in results.items())
            assert len(acked) == total, f"{len(acked)} of {total} sends acknowledged (after repeating those the kill cut off)"

            # The survivor takes over every shard once the victim's leases expire.
            all_leases, takeover = wait_for_leases(
                db_url, lambda ls: ls == {survivor.node_id: SHARDS}, timeout=max(30, 10 * LEASE_SECONDS),
                what=f"lease on all {SHARDS} shards for the survivor {survivor.node_id}")
            takeover_after = time.monotonic() - at_kill["time"]

            # The database: every acknowledged message, once (a repeated send with its clientMsgId
            # returns the original), and nothing else.
            stored = {}
            for conversation, ids in members.items():
                stored.update(survivor.history(users[ids[0]][1], conversation))
            acked_ids = {message["id"] for message, _ in acked.values()}
            lost = acked_ids - set(stored)
            assert not lost, f"{len(lost)} acknowledged messages are not stored, e.g. {sorted(lost)[:3]}"
            assert len(acked_ids) == total, f"{total - len(acked_ids)} sends acknowledged as another send's message"
            extra = {i: stored[i]["clientMsgId"] for i in set(stored) - acked_ids}
            assert not extra, f"{len(extra)} stored messages no acknowledgement names (clientMsgId: {list(extra.values())[:5]})"
            assert all(stored[message["id"]]["clientMsgId"] == client_msg_id for client_msg_id, (message, _) in acked.items()), \
                "an acknowledgement names a message stored under another clientMsgId"

            # The topic: exactly the stored messages, one event id each, valid, in order, no gaps.
            with TopicReader(first.messages_topic) as reader:
                records = reader.read_until(lambda rs: set(stored) <= message_ids_in(rs), timeout=90,
                                            what=f"all {len(stored)} stored messages")
            drained_after = time.monotonic() - at_kill["time"]
            event_ids_per_message = collections.defaultdict(set)
            for record in records:
                envelope = json.loads(record.value)
                event_ids_per_message[envelope["data"]["message"]["id"]].add(envelope["id"])
            two_events = {m: ids for m, ids in event_ids_per_message.items() if len(ids) > 1}
            assert not two_events, f"{len(two_events)} messages published as several different events, e.g. {list(two_events.items())[:2]}"
            by_conversation = check_events(records, OneOf(node_ids))
            events = {e["data"]["message"]["id"]: e for es in by_conversation.values() for e in es}
            not_stored = set(events) - set(stored)
            assert not not_stored, f"{len(not_stored)} events for messages that are not stored, e.g. {sorted(not_stored)[:3]}"
            assert_gapless_in_order(by_conversation, collections.Counter(m["conversationId"] for m in stored.values()))
            different = [(stored[i], events[i]["data"]["message"]) for i in stored if events[i]["data"]["message"] != stored[i]]
            assert not different, f"{len(different)} events carry a message unlike GET …/messages, e.g. REST {different[0][0]} vs event {different[0][1]}"
            # `node` is the node that stored the message (known for sends not repeated after the kill).
            wrong_node = [(cm, node_id, events[message["id"]]["node"]) for cm, (message, node_id) in acked.items()
                          if cm not in retried and events[message["id"]]["node"] != node_id]
            assert not wrong_node, f"{len(wrong_node)} events name another node than the one that stored the message, e.g. {wrong_node[:3]}"
            repeats = len(records) - len(distinct_event_ids(records))
            by_node = collections.Counter(node_id for _, node_id in acked.values())
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"leases shared {sharing_after:.1f} s after both started: {shared_leases}; at the kill: {at_kill['leases']} "
          f"({at_kill['acknowledged']} of {total} acknowledged); survivor held all {SHARDS} shards {takeover_after:.1f} s after the kill "
          f"(waited {takeover:.1f} s after the sends); acknowledged by node: {dict(by_node)}; {len(retried)} sends repeated on the "
          f"survivor, {len(replayed)} of them already stored; all {len(stored)} messages in the topic {drained_after:.1f} s after the kill, "
          f"{len(records)} records, {repeats} repeated; test {time.monotonic() - began:.1f} s")
