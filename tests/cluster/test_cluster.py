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
