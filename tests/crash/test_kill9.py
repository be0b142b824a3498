"""Crash safety of the real binary: kill -9 under a steady load of acknowledged sends.

Eight senders keep sending over WebSockets (at most 20 sends in flight each) while the node is
killed with SIGKILL at a random moment, twenty times. After each kill, straight from the database:
every send the node acknowledged is stored exactly once with the seq its ack carried, every
conversation's seqs are gapless, no clientMsgId is stored twice, and (SQLite) `PRAGMA
integrity_check` says ok. The node then starts again on the same data and the senders carry on,
first resending what was in flight with the same clientMsgIds, as a client does after a reconnect:
those sends are stored once whether or not they had reached the disk before the kill.

The same runs with PostgreSQL as the store (a node killed; the database stays up).
"""

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import sys
import time
import uuid

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parley_node  # noqa: E402

PORT = int(os.environ.get("PARLEY_CRASH_PORT", "18330"))
BASE = f"http://127.0.0.1:{PORT}"
WS = f"ws://127.0.0.1:{PORT}/api/v1/ws"
CYCLES = int(os.environ.get("PARLEY_CRASH_CYCLES", "20"))
SENDERS = 8
IN_FLIGHT = 20


def api(method, path, token=None, body=None):
    return parley_node.api(PORT, method, path, token, body)


def start(data_dir, log, store=None):
    env = {"PARLEY_JWT_SECRET": "crash-test-secret-" + "x" * 32}
    if store:
        env["PARLEY_STORE"] = store
    return parley_node.start(PORT, data_dir, log, env, args=["--log-format", "json"])


class Sender:
    def __init__(self, token, conversation, tag):
        self.token, self.conversation, self.tag = token, conversation, tag
        self.acked = {}  # clientMsgId -> seq
        self.in_flight = {}  # clientMsgId -> body, sent and not acknowledged
        self.count = 0
        self.errors = []

    async def run(self, acked_this_cycle):
        try:
            socket = await websockets.connect(WS, additional_headers={"Authorization": f"Bearer {self.token}"}, open_timeout=10)
        except (OSError, websockets.InvalidHandshake):
            return
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def send(client_msg_id, body):
            await slots.acquire()
            self.in_flight[client_msg_id] = body
            await socket.send(json.dumps({"type": "send", "conversationId": self.conversation, "clientMsgId": client_msg_id, "body": body}))

        async def send_loop():
            try:
                # What was in flight when the node died goes again first, under the same ids.
                for client_msg_id, body in list(self.in_flight.items()):
                    await send(client_msg_id, body)
                while True:
                    self.count += 1
                    await send(f"{self.tag}-{self.count}", f"{self.tag} message {self.count}")
            except websockets.ConnectionClosed:
                pass

        sending = asyncio.create_task(send_loop())
        try:
            async for raw in socket:
                frame = json.loads(raw)
                if frame["type"] == "ack":
                    client_msg_id, seq = frame["clientMsgId"], frame["message"]["seq"]
                    previous = self.acked.setdefault(client_msg_id, seq)
                    if previous != seq:
                        self.errors.append(f"{client_msg_id} acknowledged as seq {previous}, then as {seq}")
                    self.in_flight.pop(client_msg_id, None)
                    acked_this_cycle[0] += 1
                    slots.release()
                elif frame["type"] == "error":
                    self.errors.append(frame)
                    slots.release()
        except websockets.ConnectionClosed:
            pass
        finally:
            sending.cancel()


async def load_then_kill(process, senders):
    acked = [0]
    tasks = [asyncio.create_task(sender.run(acked)) for sender in senders]
    started = time.monotonic()
    target = random.randint(40, 160)
    while acked[0] < target:
        assert time.monotonic() - started < 30, f"the load never got going: {acked[0]} acks"
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return acked[0]


def check(senders, stored):
    """`stored`: conversation id -> list of (seq, clientMsgId) rows straight from the database."""
    for sender in senders:
        rows = stored.get(sender.conversation, [])
        seqs = sorted(seq for seq, _ in rows)
        assert seqs == list(range(1, len(rows) + 1)), f"{sender.tag}: seqs are not gapless: {seqs[:5]}…{seqs[-5:]}"
        ids = [client_msg_id for _, client_msg_id in rows]
        assert len(ids) == len(set(ids)), f"{sender.tag}: a clientMsgId is stored twice"
        by_id = {client_msg_id: seq for seq, client_msg_id in rows}
        wrong = [key for key, seq in sender.acked.items() if by_id.get(key) != seq]
        assert not wrong, f"{sender.tag}: {len(wrong)} acknowledged sends missing or moved, e.g. {wrong[:3]}"
        assert not sender.errors, f"{sender.tag}: {sender.errors[:3]}"


def register_senders():
    senders = []
    for i in range(SENDERS):
        name = "k" + uuid.uuid4().hex[:8]
        reply = api("POST", "/api/v1/auth/register", body={"username": name, "email": f"{name}@example.com", "password": "crash-password"})
        token = reply["accessToken"]
        conversation = api("POST", "/api/v1/conversations", token, {"type": "group", "name": f"Crash {i}"})["conversation"]["id"]
        senders.append(Sender(token, conversation, f"s{i}"))
    return senders


def kill_cycles(start_node, read_store, extra_check=None):
    """Runs the cycles; returns the total of acknowledged sends."""
    process = start_node()
    try:
        senders = register_senders()
        for cycle in range(CYCLES):
            asyncio.run(load_then_kill(process, senders))
            if extra_check:
                extra_check(cycle)
            check(senders, read_store())
            process = start_node()
        # A last round without a kill: the sends in flight at the last kill are settled too.
        for sender in senders:
            assert asyncio.run(settle(sender)) == {}, f"{sender.tag}: resent sends were not acknowledged"
        check(senders, read_store())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
    return sum(len(sender.acked) for sender in senders)


async def settle(sender):
    async with websockets.connect(WS, additional_headers={"Authorization": f"Bearer {sender.token}"}) as socket:
        assert json.loads(await socket.recv())["type"] == "hello"
        for client_msg_id, body in sender.in_flight.items():
            await socket.send(json.dumps({"type": "send", "conversationId": sender.conversation, "clientMsgId": client_msg_id, "body": body}))
        while sender.in_flight:
            frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            if frame["type"] == "ack":
                client_msg_id, seq = frame["clientMsgId"], frame["message"]["seq"]
                assert sender.acked.setdefault(client_msg_id, seq) == seq
                sender.in_flight.pop(client_msg_id, None)
            assert frame["type"] != "error", frame
    return sender.in_flight


def test_kill9_cycles_on_sqlite_lose_no_acknowledged_send():
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
        path = os.path.join(data_dir, "parley.sqlite")

        def read_store():
            with sqlite3.connect(path) as db:
                rows = db.execute("SELECT conversation_id, seq, client_msg_id FROM messages").fetchall()
            stored = {}
            for conversation, seq, client_msg_id in rows:
                stored.setdefault(conversation, []).append((seq, client_msg_id))
            return stored

        def integrity(cycle):
            with sqlite3.connect(path) as db:
                assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"cycle {cycle}"

        total = kill_cycles(lambda: start(data_dir, log), read_store, integrity)
        assert total >= CYCLES * 40
        print(f"\nSQLite: {CYCLES} kill -9 cycles, {total} acknowledged sends, every one stored once")


def psql(url, sql):
    output = subprocess.run(["psql", "-X", "-q", "-tA", "-F", "\t", url, "-c", sql], check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in output.splitlines() if line]


@pytest.mark.skipif(not os.environ.get("PARLEY_TEST_POSTGRES_URL") and os.environ.get("PARLEY_TEST_REQUIRE_ALL") != "1",
                    reason="PARLEY_TEST_POSTGRES_URL is not set (scripts/services.sh start)")
def test_kill9_cycles_on_postgres_lose_no_acknowledged_send():
    base = os.environ["PARLEY_TEST_POSTGRES_URL"]
    admin = base.rsplit("/", 1)[0] + "/postgres"
    database = "parley_crash_" + uuid.uuid4().hex[:8]
    psql(admin, f"CREATE DATABASE {database}")
    url = base.rsplit("/", 1)[0] + "/" + database
    try:
        with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
            def read_store():
                stored = {}
                for conversation, seq, client_msg_id in psql(url, "SELECT conversation_id, seq, client_msg_id FROM messages"):
                    stored.setdefault(conversation, []).append((int(seq), client_msg_id))
                return stored

            total = kill_cycles(lambda: start(data_dir, log, store=url), read_store)
            assert total >= CYCLES * 40
            print(f"\nPostgreSQL: {CYCLES} kill -9 cycles, {total} acknowledged sends, every one stored once")
    finally:
        psql(admin, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
