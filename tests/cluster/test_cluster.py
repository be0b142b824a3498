"""Cluster mode end to end: two Parley nodes on PostgreSQL and Redis behind nginx (scripts/cluster.sh).

Two users whose sockets sit on different nodes exchange messages, receipts, typing and presence
through nginx; then one node is killed, its user reconnects through nginx to the surviving node and
syncs, and must see every message sent meanwhile exactly once and in order.
"""

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = int(os.environ.get("PARLEY_CLUSTER_PORT", "18200"))
BASE = f"http://127.0.0.1:{PORT}"
WS = f"ws://127.0.0.1:{PORT}/api/v1/ws"


def cluster(*args):
    subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), *args], check=True, cwd=ROOT)


@pytest.fixture(scope="module", autouse=True)
def running_cluster():
    # A short presence TTL so that a killed node's users lapse within the test.
    os.environ["PARLEY_PRESENCE_TTL_SECONDS"] = "6"
    cluster("stop")
    cluster("start", "2")
    yield
    cluster("stop")


def api(method, path, token=None, body=None, expect=200):
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    assert status == expect, f"{method} {path}: {status} {payload[:300]!r}"
    return json.loads(payload) if payload else None


def register(name):
    suffix = uuid.uuid4().hex[:8]
    reply = api("POST", "/api/v1/auth/register", body={
        "username": f"{name}{suffix}", "email": f"{name}{suffix}@example.com", "password": "cluster-password-1"}, expect=201)
    return reply["user"]["id"], reply["accessToken"]


class Client:
    """A WebSocket client that keeps every frame it receives, by type."""

    def __init__(self, token):
        self.token = token
        self.frames = []
        self.socket = None
        self.reader = None
        self.node = None

    async def connect(self):
        self.socket = await websockets.connect(WS, additional_headers={"Authorization": f"Bearer {self.token}"})
        hello = json.loads(await asyncio.wait_for(self.socket.recv(), 5))
        assert hello["type"] == "hello"
        self.node = hello["node"]
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self):
        try:
            async for raw in self.socket:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    async def send(self, frame):
        await self.socket.send(json.dumps(frame))

    async def wait_for(self, predicate, timeout=10, what="frame"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {[f.get('type') for f in self.frames][-20:]}")

    async def close(self):
        await self.socket.close()
        if self.reader:
            await self.reader


async def on_other_node(token, node, attempts=12):
    """Connects through nginx until the socket lands on a node other than `node`."""
    for _ in range(attempts):
        client = await Client(token).connect()
        if client.node != node:
            return client
        await client.close()
    raise AssertionError(f"nginx kept routing to {node}")


def messages(client, conversation):
    return [f["message"] for f in client.frames if f.get("type") == "message" and f["message"]["conversationId"] == conversation]


def test_two_nodes_through_nginx_then_a_node_dies():
    asyncio.run(scenario())


async def scenario():
    alice_id, alice_token = register("alice")
    bob_id, bob_token = register("bob")
    conversation = api("POST", "/api/v1/conversations", alice_token, {"type": "direct", "userId": bob_id}, expect=201)["conversation"]["id"]

    alice = await Client(alice_token).connect()
    bob = await on_other_node(bob_token, alice.node)
    assert alice.node != bob.node

    # Presence across nodes: both online, whichever node answers.
    presence = api("GET", f"/api/v1/presence?userIds={alice_id},{bob_id}", alice_token)
    assert {p["userId"]: p["status"] for p in presence["presence"]} == {alice_id: "online", bob_id: "online"}

    # A message from alice's node reaches bob's node, and the ack comes back to alice.
    await alice.send({"type": "send", "conversationId": conversation, "clientMsgId": "a-1", "body": "hello across nodes"})
    await alice.wait_for(lambda f: f.get("type") == "ack" and f["clientMsgId"] == "a-1", what="ack")
    live = await bob.wait_for(lambda f: f.get("type") == "message", what="message on bob's node")
    assert live["message"]["body"] == "hello across nodes" and live["message"]["seq"] == 1

    # Typing and read receipts travel the other way.
    await bob.send({"type": "typing", "conversationId": conversation, "state": "start"})
    typing = await alice.wait_for(lambda f: f.get("type") == "typing", what="typing")
    assert typing["userId"] == bob_id and typing["state"] == "start"
    await bob.send({"type": "read", "conversationId": conversation, "seq": 1})
    receipt = await alice.wait_for(lambda f: f.get("type") == "receipt" and f["userId"] == bob_id and f["kind"] == "read", what="receipt")
    assert receipt["seq"] == 1

    # Kill bob's node the hard way. Bob's socket drops; alice goes on sending from her node.
    bob_node = bob.node
    cluster("kill-node", bob_node.removeprefix("node"))
    await asyncio.wait_for(bob.reader, 10)
    sent = []
    for i in range(20):
        cid = f"a-after-{i}"
        await alice.send({"type": "send", "conversationId": conversation, "clientMsgId": cid, "body": f"while you were away {i}"})
        sent.append(cid)
    for cid in sent:
        await alice.wait_for(lambda f, cid=cid: f.get("type") == "ack" and f["clientMsgId"] == cid, what=f"ack {cid}")

    # Bob reconnects through nginx (which now routes to the surviving node) and syncs from seq 1.
    bob_again = await Client(bob_token).connect()
    assert bob_again.node == alice.node, "nginx should route around the dead node"
    await bob_again.send({"type": "sync", "cursors": {conversation: 1}})
    await bob_again.wait_for(lambda f: f.get("type") == "synced" and f["conversationId"] == conversation, what="synced")
    got = messages(bob_again, conversation)
    bodies = [m["body"] for m in got]
    assert bodies == [f"while you were away {i}" for i in range(20)], bodies
    assert [m["seq"] for m in got] == list(range(2, 22)), "exactly once, in seq order, no gap"

    # Live delivery to bob's new socket works.
    await alice.send({"type": "send", "conversationId": conversation, "clientMsgId": "a-last", "body": "welcome back"})
    await bob_again.wait_for(lambda f: f.get("type") == "message" and f["message"]["body"] == "welcome back", what="live after failover")
    # Bob leaves. His socket on the dead node was never closed, so he goes offline once that entry
    # lapses (TTL 6 s here) and a surviving node sweeps it: alice hears it exactly once.
    await bob_again.close()
    offline = await alice.wait_for(
        lambda f: f.get("type") == "presence" and f["userId"] == bob_id and f["status"] == "offline", timeout=20, what="offline")
    assert offline["lastSeenAt"]
    await asyncio.sleep(3)
    offline_events = [f for f in alice.frames if f.get("type") == "presence" and f["userId"] == bob_id and f["status"] == "offline"]
    assert len(offline_events) == 1
    presence = api("GET", f"/api/v1/presence?userIds={bob_id}", alice_token)
    assert presence["presence"][0]["status"] == "offline"
    await alice.close()

    # The killed node comes back and serves again.
    cluster("start-node", bob_node.removeprefix("node"))
    history = api("GET", f"/api/v1/conversations/{conversation}/messages?limit=50", bob_token)
    assert [m["seq"] for m in history["messages"]] == list(range(1, 23))


def test_redis_and_postgres_restarts_under_load():
    asyncio.run(restarts())


async def restarts():
    """A sender keeps sending (and retrying failures with the same clientMsgId) while Redis and then
    PostgreSQL restart under the running nodes. Nothing acknowledged may be lost or duplicated, the
    nodes must not crash, and both must serve again without being restarted."""
    alice_id, alice_token = register("alice")
    bob_id, bob_token = register("bob")
    conversation = api("POST", "/api/v1/conversations", alice_token, {"type": "direct", "userId": bob_id}, expect=201)["conversation"]["id"]
    alice = await Client(alice_token).connect()
    pids = {i: open(f"/tmp/parley-cluster/node{i}/pid").read().strip() for i in (1, 2)}

    acked, failed_codes = {}, []
    pending = [f"load-{i}" for i in range(150)]
    stop_after = time.monotonic() + 60

    async def sender():
        # 10 sends a second; a send that errors is retried later with the same clientMsgId.
        while pending and time.monotonic() < stop_after:
            cid = pending.pop(0)
            await alice.send({"type": "send", "conversationId": conversation, "clientMsgId": cid, "body": f"body {cid}"})
            try:
                frame = await alice.wait_for(
                    lambda f, cid=cid: f.get("clientMsgId") == cid and f.get("type") == "ack" or f.get("ref") == cid and f.get("type") == "error",
                    timeout=10, what=f"answer to {cid}")
            except AssertionError:
                frame = {"type": "error", "code": "timeout"}
            if frame["type"] == "ack":
                acked[cid] = frame["message"]["seq"]
            else:
                failed_codes.append(frame.get("code"))
                alice.frames = [f for f in alice.frames if f.get("ref") != cid]
                pending.append(cid)
            await asyncio.sleep(0.1)

    load = asyncio.create_task(sender())
    await asyncio.sleep(2)
    # While Redis is down, a new socket for a user whose events are not yet routed to this node is
    # refused with a retryable error frame and close 1013 ("try again later"), not a bare 1011.
    cluster("stop-redis")
    carol_id, carol_token = register("carol")
    refused = await websockets.connect(WS, additional_headers={"Authorization": f"Bearer {carol_token}"})
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(refused.recv(), 10)))
    except websockets.ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd else None
    assert close_code == 1013, (close_code, frames)
    assert frames and frames[-1]["type"] == "error" and frames[-1]["code"] == "bus_unavailable", frames
    cluster("start-redis")
    await asyncio.sleep(1)
    cluster("restart-redis")
    await asyncio.sleep(3)
    cluster("restart-postgres")
    await asyncio.wait_for(load, 90)

    assert not pending, f"{len(pending)} sends never succeeded; error codes seen: {set(failed_codes)}"
    assert set(failed_codes) <= {"store_unavailable", "timeout"}, failed_codes
    # No node crashed or was restarted.
    for i, pid in pids.items():
        assert os.path.exists(f"/proc/{pid}"), f"node{i} died"
    # Both nodes report ready again by themselves.
    for port in (PORT + 1, PORT + 2):
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, f"node on {port} not ready after the restarts"
            await asyncio.sleep(0.5)
    # Every acknowledged message is stored exactly once, seqs gapless.
    history = []
    cursor = ""
    while True:
        page = api("GET", f"/api/v1/conversations/{conversation}/messages?limit=100{cursor}", alice_token)
        history = page["messages"] + history
        if not page["hasMore"]:
            break
        cursor = f"&before={page['messages'][0]['seq']}"
    client_ids = [m["clientMsgId"] for m in history]
    assert sorted(client_ids) == sorted(f"load-{i}" for i in range(150)), "each send stored exactly once"
    assert [m["seq"] for m in history] == list(range(1, 151))
    for cid, seq in acked.items():
        assert history[seq - 1]["clientMsgId"] == cid
    # Carol can connect now that Redis is back.
    carol = await Client(carol_token).connect()
    await carol.close()
    # Live delivery works across nodes again after the Redis restart.
    bob = await on_other_node(bob_token, alice.node)
    await alice.send({"type": "send", "conversationId": conversation, "clientMsgId": "after-restarts", "body": "still here"})
    await bob.wait_for(lambda f: f.get("type") == "message" and f["message"]["body"] == "still here", what="live delivery after restarts")
    await bob.close()
    await alice.close()


def upload(base, token, data, name):
    request = urllib.request.Request(base + "/api/v1/uploads", method="POST", data=data)
    request.add_header("authorization", f"Bearer {token}")
    request.add_header("content-type", "application/octet-stream")
    request.add_header("x-filename", name)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())["attachment"]


def download(base, token, path):
    request = urllib.request.Request(base + path)
    request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def test_attachment_uploaded_on_one_node_downloads_through_the_other():
    """The nodes share one S3 bucket: a file uploaded to node 1 is read through node 2, and a
    multi-megabyte upload passes nginx (streamed, not refused at its default body limit)."""
    alice_id, alice = register("alice")
    bob_id, bob = register("bob")
    conversation = api("POST", "/api/v1/conversations", alice, {"type": "direct", "userId": bob_id}, expect=201)["conversation"]["id"]
    node1, node2 = f"http://127.0.0.1:{PORT + 1}", f"http://127.0.0.1:{PORT + 2}"
    data = os.urandom(3 * 1024 * 1024 + 17)
    attachment = upload(node1, alice, data, "backup.tar")
    message = api("POST", f"/api/v1/conversations/{conversation}/messages", alice,
                  {"body": "the backup", "attachmentIds": [attachment["id"]]}, expect=201)["message"]
    assert [a["id"] for a in message["attachments"]] == [attachment["id"]]
    status, body = download(node2, bob, attachment["url"])
    assert status == 200 and body == data

    through_nginx = upload(BASE, bob, data[: 2 * 1024 * 1024], "half.bin")
    status, body = download(node1, bob, through_nginx["url"])
    assert status == 200 and body == data[: 2 * 1024 * 1024]
