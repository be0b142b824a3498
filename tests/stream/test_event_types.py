"""Every event type of the stream, produced by the real binary and checked against its published
JSON Schema (docs/events/<type>.schema.json), as an outside consumer would see it.

- A group's whole life, a direct conversation, receipts and a user's socket on an embedded node
  with the stream on: every record of <prefix>conversations, receipts, presence and messages
  validates against the schema of its type, carries that type in the `parley-event-type` header and
  is keyed by its conversation (by the user for presence); per key the events come in the order of
  the operations, each exactly once, and operations that change nothing publish nothing.
- notification.requested: `serve` with the notify consumer in-process (PARLEY_CONSUMERS=notify) and
  Kafka, a group of three with only the sender online: one notification per offline recipient in
  <prefix>notifications, valid, keyed by the recipient. (tests/stream/test_consumers.py covers the
  consumer's semantics; here only the event's shape.)
- webhook.failed: an embedded node without Kafka whose only webhook endpoint always answers 500
  dead-letters every event to PARLEY_DEADLETTER_FILE; each line validates, and so does the original
  event it carries.

Uses the helpers of test_stream.py (node, topic reader); like it, needs a binary built with
`--traits Kafka` and PARLEY_TEST_KAFKA_BROKERS (`eval "$(scripts/kafka-mock.sh start)"`), else it is
skipped (or fails with PARLEY_TEST_REQUIRE_ALL=1).
"""

import collections
import contextlib
import glob
import hashlib
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import uuid

import pytest

# test_stream skips (or fails) the whole module itself when no Kafka cluster is configured.
from test_stream import MILLISECOND_UTC, ROOT, Node, TopicReader, free_port, unique

import jsonschema  # noqa: E402
from referencing import Registry, Resource  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

SCHEMA_DIR = os.path.join(ROOT, "docs", "events")

EVENT_TYPES = {
    "message.created", "conversation.created", "conversation.updated", "conversation.deleted", "member.added",
    "member.removed", "member.role_changed", "receipt.read", "receipt.delivered", "presence.online", "presence.offline",
    "notification.requested", "webhook.failed", "message.edited", "message.deleted", "reaction.added", "reaction.removed",
}

# Whose id is the record key: the conversation's, else the user's in data.userId.
KEYED_BY_USER = ("presence.", "notification.")

# Fields of the REST conversation that events leave out (the viewer's own, and lastMessage).
VIEWER_FIELDS = ("readSeq", "unreadCount", "mentionCount", "changeSeq", "lastMessage")


# --- schemas --------------------------------------------------------------------------------------

_validators = None


def validators():
    """One validator per event type from docs/events/*.schema.json, every $ref (the envelope, a
    sibling's $defs) resolved from the repository, `format` (uuid, date-time) checked."""
    global _validators
    if _validators is None:
        schemas = {}
        for path in sorted(glob.glob(os.path.join(SCHEMA_DIR, "*.schema.json"))):
            with open(path) as file:
                schema = json.load(file)
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[os.path.basename(path)[: -len(".schema.json")]] = schema
        missing = EVENT_TYPES - set(schemas)
        assert not missing, f"no schema in docs/events for {sorted(missing)}"
        registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
        _validators = {
            name: jsonschema.Draft202012Validator(schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            for name, schema in schemas.items() if name != "envelope"
        }
    return _validators


def schema_errors(envelope):
    """The schema violations of one envelope, checked against the schema of its own type."""
    kind = envelope.get("type") if isinstance(envelope, dict) else None
    validator = validators().get(kind)
    if validator is None or kind not in EVENT_TYPES:
        return [f"no schema for type {kind!r}"]
    errors = sorted(validator.iter_errors(envelope), key=lambda e: list(e.absolute_path))
    return [f"{list(e.absolute_path)}: {e.message}" for e in errors[:3]]


def expected_key(envelope):
    return envelope["data"]["userId"] if envelope["type"].startswith(KEYED_BY_USER) else envelope["conversationId"]


def check_records(records, node_id, topic):
    """Checks every record and returns its events per key, in topic order, re-sends (a repeated
    event id with the same value) dropped."""
    problems, by_key, first_value, partitions = [], collections.defaultdict(list), {}, collections.defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        where = f"{topic} partition {record.partition} offset {record.offset}"
        try:
            envelope = json.loads(record.value)
        except ValueError as error:
            problems.append(f"{where}: value is not JSON ({error}): {record.value[:200]!r}")
            continue
        errors = schema_errors(envelope)
        if errors:
            problems.append(f"{where}: not a valid {envelope.get('type')} event: " + "; ".join(errors) + f"\n    {record.value[:400]!r}")
            continue
        headers = [value for name, value in record.headers if name == "parley-event-type"]
        if headers != [envelope["type"]]:
            problems.append(f"{where}: parley-event-type headers {headers} for a {envelope['type']} event")
        if record.key != expected_key(envelope):
            problems.append(f"{where}: {envelope['type']} keyed {record.key!r}, expected {expected_key(envelope)!r}")
        if envelope["node"] != node_id:
            problems.append(f"{where}: node {envelope['node']!r}, expected {node_id!r}")
        if not MILLISECOND_UTC.match(envelope["occurredAt"]):
            problems.append(f"{where}: occurredAt {envelope['occurredAt']!r} is not RFC 3339 UTC with milliseconds")
        if envelope["id"] in first_value:
            if first_value[envelope["id"]] != record.value:
                problems.append(f"{where}: event {envelope['id']} repeated with a different value")
            continue
        first_value[envelope["id"]] = record.value
        by_key[record.key].append(envelope)
        partitions[record.key].add(record.partition)
    assert not problems, f"{len(problems)} bad records, e.g.:\n" + "\n".join(problems[:10])
    split = {k: sorted(p) for k, p in partitions.items() if len(p) > 1}
    assert not split, f"{topic}: keys spread over several partitions: {split}"
    return by_key


def read_topic(topic, expected, linger=2.0, timeout=45):
    """Reads `topic` until it holds `expected` distinct event ids, then `linger` seconds more (to
    catch events nobody expected); returns the records."""
    with TopicReader(topic) as reader:
        reader.read_until(lambda rs: len({json.loads(r.value).get("id") for r in rs}) >= expected, timeout=timeout,
                          what=f"{expected} distinct events")
        until = time.monotonic() + linger
        return reader.read_until(lambda rs: time.monotonic() > until, timeout=linger + 5, what="more events")


def without_viewer_fields(conversation):
    return {k: v for k, v in conversation.items() if k not in VIEWER_FIELDS}


# --- helpers --------------------------------------------------------------------------------------


def register(node):
    """Registers a fresh user; returns the REST reply's user and its access token."""
    name = unique("u")
    reply = node.api("POST", "/api/v1/auth/register",
                     body={"username": name, "email": f"{name}@example.com", "password": "stream-password-1"}, expect=(201,))
    return reply["user"], reply["accessToken"]


@contextlib.contextmanager
def open_socket(node, token):
    """A WebSocket of the user, authenticated (its `hello` read); closed when the block ends."""
    with ws_connect(node.ws, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20) as sock:
        hello = json.loads(sock.recv(timeout=20))
        assert hello["type"] == "hello", hello
        yield sock


def await_frame(sock, wanted, timeout=20):
    """Reads frames until one satisfies `wanted`; returns it."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            frame = json.loads(sock.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if wanted(frame):
            return frame
        seen.append(frame.get("type"))
    raise AssertionError(f"no such frame within {timeout} s; frames seen: {seen}")


def types_of(events):
    return [event["type"] for event in events]


# --- tests ----------------------------------------------------------------------------------------


def test_every_event_type_valid_keyed_and_in_order():
    with Node() as node:
        (alice, alice_token), (bob, bob_token), (carol, carol_token) = [register(node) for _ in range(3)]
        a, b, c = alice["id"], bob["id"], carol["id"]
        api = node.api
        expected = collections.defaultdict(list)  # (topic, key) -> event types in operation order

        # Carol comes online (her first socket): presence.online, keyed by her.
        with open_socket(node, carol_token) as carol_ws:
            expected[("presence", c)].append("presence.online")
            # A group's life, each step an event on its key.
            created = api("POST", "/api/v1/conversations", alice_token,
                          {"type": "group", "name": "Event types", "memberIds": [b]}, expect=(201,))["conversation"]
            group = created["id"]
            expected[("conversations", group)].append("conversation.created")
            renamed = api("PATCH", f"/api/v1/conversations/{group}", alice_token, {"name": "Event types, renamed"})["conversation"]
            expected[("conversations", group)].append("conversation.updated")
            api("POST", f"/api/v1/conversations/{group}/members", alice_token, {"userIds": [c]})
            expected[("conversations", group)].append("member.added")
            api("POST", f"/api/v1/conversations/{group}/members", alice_token, {"userIds": [c]})  # already in: nothing
            api("PATCH", f"/api/v1/conversations/{group}/members/{b}", alice_token, {"role": "admin"})
            expected[("conversations", group)].append("member.role_changed")
            api("PATCH", f"/api/v1/conversations/{group}/members/{b}", alice_token, {"role": "admin"})  # unchanged: nothing
            message = node.send_rest(alice_token, group, "Hallo, Ereignisse ✓", "event-types-1")
            expected[("messages", group)].append("message.created")
            # Bob reads over REST (only receipt.read, though it moves delivered too); again: nothing.
            api("POST", f"/api/v1/conversations/{group}/read", bob_token, {"seq": 1}, expect=(204,))
            expected[("receipts", group)].append("receipt.read")
            api("POST", f"/api/v1/conversations/{group}/read", bob_token, {"seq": 1}, expect=(204,))
            # Carol confirms delivery over her socket; her own receipt frame says it was stored.
            carol_ws.send(json.dumps({"type": "delivered", "conversationId": group, "seq": 1}))
            await_frame(carol_ws, lambda f: f.get("type") == "receipt" and f.get("kind") == "delivered" and f.get("userId") == c)
            expected[("receipts", group)].append("receipt.delivered")
            # Changes to the message, after the receipts (Bob's reply moves his read watermark): an
            # edit (the same body again changes nothing), a reaction added twice and removed twice
            # (once each counts), a reply, then the original deleted (twice).
            path = f"/api/v1/conversations/{group}/messages/{message['id']}"
            edited = api("PATCH", path, alice_token, {"body": "Hallo, bearbeitet ✓ @" + bob["username"]})["message"]
            expected[("messages", group)].append("message.edited")
            api("PATCH", path, alice_token, {"body": edited["body"]})
            thumbs = "%F0%9F%91%8D"
            for _ in range(2):
                api("PUT", f"{path}/reactions/{thumbs}", bob_token, expect=(204,))
            expected[("messages", group)].append("reaction.added")
            for _ in range(2):
                api("DELETE", f"{path}/reactions/{thumbs}", bob_token, expect=(204,))
            expected[("messages", group)].append("reaction.removed")
            reply = api("POST", f"/api/v1/conversations/{group}/messages", bob_token,
                        {"body": "Antwort", "clientMsgId": "event-types-2", "replyToId": message["id"]}, expect=(201,))["message"]
            expected[("messages", group)].append("message.created")
            for _ in range(2):
                api("DELETE", path, alice_token, expect=(204,))
            expected[("messages", group)].append("message.deleted")
        # Her socket closed (her last): presence.offline.
        expected[("presence", c)].append("presence.offline")
        api("DELETE", f"/api/v1/conversations/{group}/members/{c}", alice_token, expect=(204,))
        expected[("conversations", group)].append("member.removed")
        api("DELETE", f"/api/v1/conversations/{group}", alice_token, expect=(204,))
        expected[("conversations", group)].append("conversation.deleted")
        # A direct conversation; asking for it again finds it (200) and publishes nothing.
        direct = api("POST", "/api/v1/conversations", alice_token, {"type": "direct", "userId": b}, expect=(201,))["conversation"]
        expected[("conversations", direct["id"])].append("conversation.created")
        api("POST", "/api/v1/conversations", bob_token, {"type": "direct", "userId": a}, expect=(200,))

        events = {}  # (topic, key) -> events
        for topic in ("conversations", "receipts", "presence", "messages"):
            count = sum(len(types) for (t, _), types in expected.items() if t == topic)
            records = read_topic(node.topic_prefix + topic, count)
            for key, envelopes in check_records(records, node.node_id, node.topic_prefix + topic).items():
                events[(topic, key)] = envelopes

        # Per key: exactly the operations' events, in their order, nothing else.
        got = {where: types_of(envelopes) for where, envelopes in events.items()}
        assert got == dict(expected), "events per (topic, key) differ from the operations:\n" + "\n".join(
            f"  {where}: got {got.get(where)}, expected {expected.get(where)}" for where in sorted(set(got) | set(expected))
            if got.get(where) != expected.get(where))
        seen_types = {e["type"] for envelopes in events.values() for e in envelopes}
        assert seen_types == EVENT_TYPES - {"notification.requested", "webhook.failed"}, seen_types
        every = [e for envelopes in events.values() for e in envelopes]
        assert all(uuid.UUID(e["id"]).version == 7 for e in every), "an event id is not a UUIDv7"
        assert len({e["id"] for e in every}) == len(every), "two events share an id"

        # What each event says, against what the REST API answered.
        lifecycle = events[("conversations", group)]
        assert lifecycle[0]["data"]["conversation"] == without_viewer_fields(created), \
            f"conversation.created {lifecycle[0]['data']} vs REST {created}"
        assert lifecycle[0]["occurredAt"] == created["createdAt"]
        assert lifecycle[1]["data"]["conversation"] == without_viewer_fields(renamed), \
            f"conversation.updated {lifecycle[1]['data']} vs REST {renamed}"
        assert lifecycle[2]["data"] == {"userId": c, "role": "member"}, lifecycle[2]
        assert lifecycle[3]["data"] == {"userId": b, "role": "admin"}, lifecycle[3]
        assert lifecycle[4]["data"] == {"userId": c}, lifecycle[4]
        assert lifecycle[5]["data"] == {}, lifecycle[5]
        assert all(e["conversationId"] == group and e["seq"] is None for e in lifecycle)
        [direct_created] = events[("conversations", direct["id"])]
        assert direct_created["data"]["conversation"] == without_viewer_fields(direct), \
            f"conversation.created {direct_created['data']} vs REST {direct}"
        assert direct_created["data"]["conversation"]["name"] is None
        read, delivered = events[("receipts", group)]
        assert (read["seq"], read["data"]) == (1, {"userId": b, "seq": 1}), read
        assert (delivered["seq"], delivered["data"]) == (1, {"userId": c, "seq": 1}), delivered
        message_created, message_edited, reaction_added, reaction_removed, reply_created, message_deleted = events[("messages", group)]
        assert message_created["data"]["message"] == message, f"{message_created['data']} vs REST {message}"
        assert message_edited["data"]["message"] == edited, f"{message_edited['data']} vs REST {edited}"
        assert edited["mentions"] == [b] and edited["editedAt"] is not None, edited
        assert reaction_added["data"]["emoji"] == "👍" and reaction_added["data"]["userId"] == b, reaction_added["data"]
        assert reaction_added["data"]["message"]["reactions"] == [{"emoji": "👍", "count": 1, "userIds": [b]}]
        assert reaction_removed["data"]["message"]["reactions"] == [], reaction_removed["data"]
        assert reply_created["data"]["message"] == reply and reply["replyTo"]["id"] == message["id"], reply
        deleted = message_deleted["data"]["message"]
        assert deleted["body"] == "" and deleted["deletedAt"] is not None and deleted["seq"] == message["seq"], deleted
        # Changes carry the changed message's seq, not a new one.
        assert [e["seq"] for e in events[("messages", group)]] == [1, 1, 1, 1, 2, 1]
        online, offline = events[("presence", c)]
        assert online["data"] == offline["data"] == {"userId": c}
        assert online["conversationId"] is None and online["seq"] is None and offline["conversationId"] is None
        assert online["occurredAt"] <= offline["occurredAt"], (online, offline)


def notification_id(event_id, user_id):
    """The id notify derives for (message event, recipient): SHA-256 of "<event id>:<user id>",
    first 16 bytes as a version 8 UUID."""
    raw = bytearray(hashlib.sha256(f"{event_id}:{user_id}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def test_notification_requested_is_valid():
    with Node(extra_env={"PARLEY_CONSUMERS": "notify"}) as node:
        (alice, alice_token), (bob, _), (carol, _) = [register(node) for _ in range(3)]
        group = node.group(alice_token, "Notify schema", [bob["id"], carol["id"]])
        body = "Ping für die Offline-Mitglieder 🔔"
        # Only the sender is online while notify looks at presence.
        with open_socket(node, alice_token) as alice_ws:
            alice_ws.send(json.dumps({"type": "send", "conversationId": group, "clientMsgId": "notify-1", "body": body}))
            message = await_frame(alice_ws, lambda f: f.get("type") == "ack")["message"]
            records = read_topic(node.topic_prefix + "notifications", 2, timeout=60)
        by_user = {}
        for key, envelopes in check_records(records, node.node_id, node.topic_prefix + "notifications").items():
            assert len(envelopes) == 1, f"{len(envelopes)} notifications for {key}: {envelopes}"
            by_user[key] = envelopes[0]
        assert set(by_user) == {bob["id"], carol["id"]}, f"notified {sorted(by_user)}, expected bob and carol"
        [message_event] = [json.loads(r.value) for r in read_topic(node.topic_prefix + "messages", 1, linger=0)]
        for user, event in by_user.items():
            assert event["type"] == "notification.requested"
            assert (event["conversationId"], event["seq"]) == (group, message["seq"]) == (event["data"]["conversationId"], event["data"]["seq"])
            assert event["data"]["messageId"] == message["id"]
            assert event["data"]["sender"] == {"id": alice["id"], "username": alice["username"], "displayName": alice["displayName"]}
            assert event["data"]["preview"] == body
            assert event["id"] == notification_id(message_event["id"], user), \
                f"notification id {event['id']} is not derived from message event {message_event['id']} and {user}"


class Failing(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that answers every POST with 500, counting attempts per event id."""

    attempts = collections.Counter()
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event_id = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            event_id = None
        with self.lock:
            self.attempts[event_id] += 1
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_failed_dead_letters_are_valid():
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Failing)
    Failing.attempts = collections.Counter()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]
    letters_dir = tempfile.mkdtemp(prefix="parley-deadletter-")
    dead_letters = os.path.join(letters_dir, "dead.jsonl")
    try:
        endpoint = f"http://127.0.0.1:{port}/hook?token=not-for-logs"
        node = Node(brokers="", extra_env={
            "PARLEY_WEBHOOKS": json.dumps([{"url": endpoint, "secret": "webhook-secret-" + uuid.uuid4().hex}]),
            "PARLEY_WEBHOOK_MAX_ATTEMPTS": "2",
            "PARLEY_WEBHOOK_RETRY_MS": "10",
            "PARLEY_DEADLETTER_FILE": dead_letters,
        })
        with node:
            (alice, alice_token), (bob, bob_token) = register(node), register(node)
            with open_socket(node, bob_token):  # presence.online (conversationId and seq null), then .offline
                group = node.group(alice_token, "Dead letters", [bob["id"]])  # conversation.created (seq null)
                node.send_rest(alice_token, group, "nobody takes this", "dead-1")  # message.created
                node.api("POST", f"/api/v1/conversations/{group}/read", bob_token, {"seq": 1}, expect=(204,))  # receipt.read
            wanted = {"presence.online", "conversation.created", "message.created", "receipt.read", "presence.offline"}

            def lines():
                try:
                    with open(dead_letters, encoding="utf-8") as file:
                        return [line for line in file.read().split("\n") if line]
                except FileNotFoundError:
                    return []

            deadline = time.monotonic() + 30
            while True:
                letters = [json.loads(line) for line in lines()]
                if wanted <= {letter.get("data", {}).get("event", {}).get("type") for letter in letters}:
                    break
                assert time.monotonic() < deadline, \
                    f"dead letters after 30 s: {[letter.get('data', {}).get('event', {}).get('type') for letter in letters]}, wanted {sorted(wanted)}"
                time.sleep(0.1)
            time.sleep(0.5)  # anything else on its way
            problems = []
            letters = lines()
            for n, line in enumerate(letters, 1):
                letter = json.loads(line)
                errors = schema_errors(letter)
                if errors:
                    problems.append(f"line {n}: not a valid webhook.failed: {'; '.join(errors)}\n    {line[:400]}")
                    continue
                original = letter["data"]["event"]
                errors = schema_errors(original)
                if errors:
                    problems.append(f"line {n}: the dead-lettered {original.get('type')} is not valid: {'; '.join(errors)}")
                if (letter["conversationId"], letter["seq"]) != (original["conversationId"], original["seq"]):
                    problems.append(f"line {n}: conversationId/seq {letter['conversationId']}/{letter['seq']} "
                                    f"differ from the original's {original['conversationId']}/{original['seq']}")
                if letter["data"]["attempts"] != 2 or letter["data"]["lastError"] != "HTTP 500":
                    problems.append(f"line {n}: attempts {letter['data']['attempts']}, lastError {letter['data']['lastError']!r}")
                if letter["data"]["endpoint"] != f"http://127.0.0.1:{port}/hook":
                    problems.append(f"line {n}: endpoint {letter['data']['endpoint']!r} (the query must not be shown)")
                if letter["node"] != node.node_id or not MILLISECOND_UTC.match(letter["occurredAt"]):
                    problems.append(f"line {n}: node {letter['node']!r}, occurredAt {letter['occurredAt']!r}")
                if Failing.attempts[original["id"]] != 2:
                    problems.append(f"line {n}: the endpoint saw {Failing.attempts[original['id']]} attempts of {original['type']}, expected 2")
            assert not problems, f"{len(problems)} bad dead letters of {len(letters)}, e.g.:\n" + "\n".join(problems[:10])
            originals = [json.loads(line)["data"]["event"]["id"] for line in letters]
            assert len(originals) == len(set(originals)), "an event was dead-lettered twice"
    finally:
        receiver.shutdown()
        receiver.server_close()
        shutil.rmtree(letters_dir, ignore_errors=True)
