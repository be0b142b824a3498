"""Graceful shutdown of the real binary under load.

Twenty senders keep sending over WebSockets while the node gets SIGTERM. Every socket must be
closed with 1001 (going away), every send the node acknowledged must be in the store when it comes
back, the node must exit 0 within its grace period, and SQLite must have been closed cleanly (its
write-ahead log checkpointed away).
"""

import asyncio
import json
import os
import signal
import tempfile
import sys
import time
import uuid

import websockets

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parley_node  # noqa: E402

PORT = int(os.environ.get("PARLEY_SHUTDOWN_PORT", "18300"))
BASE = f"http://127.0.0.1:{PORT}"
WS = f"ws://127.0.0.1:{PORT}/api/v1/ws"
SENDERS = 20
GRACE_SECONDS = 15


def api(method, path, token=None, body=None):
    return parley_node.api(PORT, method, path, token, body)


def start(data_dir, log):
    return parley_node.start(PORT, data_dir, log, args=["--log-format", "json"])


class Sender:
    """One socket that sends as fast as the node acknowledges, up to 50 sends in flight."""

    def __init__(self, token, conversation, tag):
        self.token, self.conversation, self.tag = token, conversation, tag
        self.acked = {}  # clientMsgId -> seq
        self.close_code = None
        self.sent = 0

    async def run(self, stop_sending):
        socket = await websockets.connect(WS, additional_headers={"Authorization": f"Bearer {self.token}"})
        hello = json.loads(await socket.recv())
        assert hello["type"] == "hello"
        in_flight = asyncio.Semaphore(50)

        async def send_loop():
            while not stop_sending.is_set():
                await in_flight.acquire()
                self.sent += 1
                frame = {"type": "send", "conversationId": self.conversation,
                         "clientMsgId": f"{self.tag}-{self.sent}", "body": f"{self.tag} message {self.sent}"}
                try:
                    await socket.send(json.dumps(frame))
                except websockets.ConnectionClosed:
                    return

        sending = asyncio.create_task(send_loop())
        try:
            async for raw in socket:
                frame = json.loads(raw)
                if frame["type"] == "ack":
                    self.acked[frame["clientMsgId"]] = frame["message"]["seq"]
                    in_flight.release()
                elif frame["type"] == "error":
                    in_flight.release()
        except websockets.ConnectionClosed:
            pass
        self.close_code = socket.close_code
        sending.cancel()


async def load_then_sigterm(process, users):
    stop_sending = asyncio.Event()
    senders = [Sender(token, conversation, f"s{i}") for i, (token, conversation) in enumerate(users)]
    tasks = [asyncio.create_task(sender.run(stop_sending)) for sender in senders]
    # Under load: wait until every socket has had sends acknowledged.
    started = time.monotonic()
    while not all(len(sender.acked) >= 5 for sender in senders):
        failed = [task.exception() for task in tasks if task.done()]
        assert not failed, f"a socket ended before the signal: {failed[:3]}, close codes {[s.close_code for s in senders]}"
        assert time.monotonic() - started < 20, f"the senders never got going: {[len(s.acked) for s in senders]}"
        await asyncio.sleep(0.05)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=GRACE_SECONDS)
    stop_sending.set()
    return senders, signalled


def test_sigterm_under_load_closes_sockets_with_1001_keeps_every_ack_and_exits_0():
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
        process = start(data_dir, log)
        try:
            # One user and one conversation per sender, so each socket reads only its own acks and echoes.
            users = []
            for _ in range(SENDERS):
                name = "u" + uuid.uuid4().hex[:8]
                reply = api("POST", "/api/v1/auth/register",
                            body={"username": name, "email": f"{name}@example.com", "password": "shutdown-password"})
                token = reply["accessToken"]
                conversation = api("POST", "/api/v1/conversations", token, {"type": "group", "name": "Load"})["conversation"]["id"]
                users.append((token, conversation))

            senders, signalled = asyncio.run(load_then_sigterm(process, users))
            status = process.wait(timeout=GRACE_SECONDS)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")

        assert status == 0, f"exit status {status}\n{output[-3000:]}"
        assert took < GRACE_SECONDS, f"shutdown took {took:.1f} s"
        codes = [sender.close_code for sender in senders]
        assert codes == [1001] * SENDERS, f"close codes: {codes}"
        assert "SQLite store closed" in output, output[-3000:]
        wal = os.path.join(data_dir, "parley.sqlite-wal")
        assert not os.path.exists(wal) or os.path.getsize(wal) == 0, "the database was not closed cleanly"

        assert sum(len(sender.acked) for sender in senders) >= SENDERS * 5

        # Back up: every acknowledged send is stored, with the seq its ack carried, and seqs are gapless.
        process = start(data_dir, log)
        try:
            for sender in senders:
                stored, after = {}, 0
                while True:
                    page = api("GET", f"/api/v1/conversations/{sender.conversation}/messages?after={after}&limit=200", sender.token)
                    for message in page["messages"]:
                        stored[message["clientMsgId"]] = message["seq"]
                        after = message["seq"]
                    if not page["hasMore"]:
                        break
                missing = [key for key in sender.acked if stored.get(key) != sender.acked[key]]
                assert not missing, f"{len(missing)} acknowledged sends missing or changed, e.g. {missing[:5]}"
                assert sorted(stored.values()) == list(range(1, len(stored) + 1)), "seqs are gapless"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=GRACE_SECONDS)
