"""Hostile clients against the real binary: slow requests (slowloris) on HTTP and on the WebSocket
upgrade, a slow body, idle keep-alive connections, 10,000 WebSockets that never authenticate, and
compressed frames that were never negotiated. In each case the node closes what it must, stays up,
and serves a normal user meanwhile.
"""

import asyncio
import base64
import json
import os
import resource
import signal
import tempfile
import sys
import time
import uuid

import pytest
import websockets

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parley_node  # noqa: E402

PORT = int(os.environ.get("PARLEY_ABUSE_PORT", "18340"))
BASE = f"http://127.0.0.1:{PORT}"
WS = f"ws://127.0.0.1:{PORT}/api/v1/ws"
HEAD_TIMEOUT, BODY_TIMEOUT, KEEPALIVE, AUTH_TIMEOUT = 2, 2, 3, 45
FLOOD = int(os.environ.get("PARLEY_ABUSE_CONNECTIONS", "10000"))


def api(method, path, token=None, body=None):
    return parley_node.api(PORT, method, path, token, body)


@pytest.fixture(scope="module")
def node():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 20000)
    if wanted < FLOOD + 500:
        pytest.fail(f"the open-file limit ({hard}) is below the {FLOOD} connections this test opens (set PARLEY_ABUSE_CONNECTIONS)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the node inherits it
    env = {"PARLEY_HTTP_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT), "PARLEY_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
           "PARLEY_HTTP_KEEPALIVE_SECONDS": str(KEEPALIVE), "PARLEY_WS_AUTH_TIMEOUT_SECONDS": str(AUTH_TIMEOUT)}
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
        process = parley_node.start(PORT, data_dir, log, env)
        try:
            yield process
            assert process.poll() is None, "the node died"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fds(process):
    return len(os.listdir(f"/proc/{process.pid}/fd"))


async def normal_user_chats():
    """Registers two users and has one message go from one to the other over WebSockets: what a
    legitimate user needs to keep working while the node is under attack."""
    loop = asyncio.get_running_loop()
    names = ["n" + uuid.uuid4().hex[:8] for _ in range(2)]
    accounts = [await loop.run_in_executor(None, lambda n=n: api(
        "POST", "/api/v1/auth/register", body={"username": n, "email": f"{n}@example.com", "password": "normal-password"})) for n in names]
    tokens = [a["accessToken"] for a in accounts]
    conversation = (await loop.run_in_executor(None, lambda: api(
        "POST", "/api/v1/conversations", tokens[0], {"type": "direct", "userId": accounts[1]["user"]["id"]})))["conversation"]["id"]
    async with websockets.connect(WS, additional_headers={"Authorization": f"Bearer {tokens[0]}"}) as alice, \
            websockets.connect(WS, additional_headers={"Authorization": f"Bearer {tokens[1]}"}) as bob:
        for socket in (alice, bob):
            assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "hello"
        body = "still here " + uuid.uuid4().hex
        await alice.send(json.dumps({"type": "send", "conversationId": conversation, "clientMsgId": "c1", "body": body}))
        while True:
            frame = json.loads(await asyncio.wait_for(bob.recv(), 10))
            if frame["type"] == "message":
                assert frame["message"]["body"] == body
                return


async def closed_by_server(reader, limit):
    """Seconds until the server closed the connection (EOF or reset), or None within `limit`."""
    started = time.monotonic()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), timeout=max(0.01, limit - (time.monotonic() - started)))
            if not data:
                return time.monotonic() - started
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - started
    except asyncio.TimeoutError:
        return None


async def trickle(request, connections):
    """`connections` clients each send `request` one byte every 0.3 s; returns how long the server
    took to close each (None: it never did, within three times the header timeout)."""
    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        started = time.monotonic()

        async def drip():
            try:
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.3)
            except (ConnectionError, OSError):
                pass

        dripping = asyncio.create_task(drip())
        took = await closed_by_server(reader, HEAD_TIMEOUT * 3)
        dripping.cancel()
        writer.close()
        return None if took is None else time.monotonic() - started
    return await asyncio.gather(*(one() for _ in range(connections)))


def test_slowloris_headers_are_cut_off_at_the_head_timeout_while_others_chat(node):
    request = b"GET /api/v1/users/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"

    async def scenario():
        attack = asyncio.create_task(trickle(request, 200))
        await asyncio.sleep(0.5)
        await normal_user_chats()
        return await attack

    times = asyncio.run(scenario())
    assert all(t is not None for t in times), f"{times.count(None)} trickling connections were never closed"
    assert max(times) < HEAD_TIMEOUT + 1.5, f"slowest close after {max(times):.1f} s"


def test_slowloris_on_the_websocket_upgrade_is_cut_off_too(node):
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Padding: {'b' * 100}\r\n\r\n").encode()
    times = asyncio.run(trickle(request, 100))
    assert all(t is not None for t in times), f"{times.count(None)} trickled upgrades were never closed"
    assert max(times) < HEAD_TIMEOUT + 1.5


def test_a_stalled_body_and_an_idle_keep_alive_connection_are_closed(node):
    async def scenario():
        # A body that stops after ten of its thousand bytes.
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"login\":")
        await writer.drain()
        stalled = await closed_by_server(reader, BODY_TIMEOUT * 3)
        writer.close()
        # One request answered, then nothing: closed after the keep-alive time, not before.
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        idle = await closed_by_server(reader, KEEPALIVE * 3)
        writer.close()
        return stalled, answer, idle

    stalled, answer, idle = asyncio.run(scenario())
    assert stalled is not None and stalled < BODY_TIMEOUT + 1.5, f"stalled body closed after {stalled}"
    assert answer.startswith(b"HTTP/1.1 200")
    assert idle is not None and KEEPALIVE - 0.5 < idle < KEEPALIVE + 1.5, f"idle keep-alive closed after {idle}"


def test_ten_thousand_sockets_that_never_authenticate_are_closed_and_released(node):
    baseline = open_fds(node)

    async def upgrade():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert status.startswith(b"HTTP/1.1 101"), status[:40]
        upgraded = time.monotonic()
        # Watch for the close from now on, so that a slow opening of the rest does not delay the reading.
        return reader, writer, upgraded, asyncio.create_task(closed(reader, upgraded))

    async def closed(reader, upgraded):
        # The server's close frame: 0x88, length, then the code (big-endian); and how long after the upgrade.
        data = await asyncio.wait_for(reader.read(64), AUTH_TIMEOUT + 60)
        code = int.from_bytes(data[2:4], "big") if len(data) >= 4 and data[0] == 0x88 else data
        return code, time.monotonic() - upgraded

    async def scenario():
        sockets = []
        started = time.monotonic()
        for start in range(0, FLOOD, 500):
            sockets += await asyncio.gather(*(upgrade() for _ in range(start, min(FLOOD, start + 500))))
        opened = time.monotonic() - started
        held = open_fds(node)
        # Sockets upgraded more than the auth timeout ago may rightly be gone already.
        young = sum(1 for _, _, upgraded, _ in sockets if time.monotonic() - upgraded < AUTH_TIMEOUT - 1)
        # The node still serves someone real while it holds them all.
        await normal_user_chats()
        results = await asyncio.gather(*(watcher for _, _, _, watcher in sockets))
        for _, writer, _, _ in sockets:
            writer.close()
        return opened, held, young, results

    opened, held, young, results = asyncio.run(scenario())
    assert held >= baseline + young - 20, f"the node held {held - baseline} sockets, {young} expected (opened in {opened:.1f} s)"
    wrong = [code for code, _ in results if code != 1008]
    assert not wrong, f"{len(wrong)} sockets not closed with 1008, e.g. {wrong[:3]}"
    waited = sorted(after for _, after in results)
    assert waited[0] > AUTH_TIMEOUT - 1, f"a socket was closed {waited[0]:.1f} s after its upgrade, before the auth timeout"
    assert waited[-1] < AUTH_TIMEOUT + 15, f"a socket was closed only {waited[-1]:.1f} s after its upgrade"
    deadline = time.monotonic() + 20
    while open_fds(node) > baseline + 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_fds(node) <= baseline + 50, f"{open_fds(node) - baseline} descriptors still open"
    print(f"\n{FLOOD} unauthenticated sockets opened in {opened:.1f} s ({held - baseline} held at once), "
          f"all closed with 1008 {waited[0]:.1f}–{waited[-1]:.1f} s after their upgrade, and released")


def test_compression_is_not_negotiated_and_a_compressed_frame_closes_the_socket(node):
    name = "z" + uuid.uuid4().hex[:8]
    token = api("POST", "/api/v1/auth/register", body={"username": name, "email": f"{name}@example.com", "password": "zip-password"})["accessToken"]

    async def scenario():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        # A "compressed" text frame (RSV1 set) that would inflate to a megabyte of zeros.
        import zlib
        bomb = zlib.compress(b"\0" * 1_000_000)[2:-4]
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(bomb))
        writer.write(bytes([0xC1, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + payload)
        await writer.drain()
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            if not chunk:
                break
            data += chunk
        writer.close()
        return head, data

    head, data = asyncio.run(scenario())
    assert head.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-extensions" not in head.lower(), "compression must not be negotiated"
    close = data[data.rfind(b"\x88"):] if b"\x88" in data else b""
    assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1002, f"expected close 1002, got {data[-20:]!r}"
    asyncio.run(normal_user_chats())


def test_an_upgrade_the_node_will_not_perform_is_answered_as_plain_http(node):
    """`curl --http2` asks for h2c; a WebSocket upgrade may lack its key or use another method. Each
    gets an ordinary answer instead of a dropped connection."""
    requests = [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", b"200"),
        (b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"400"),
        (b"POST /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", b"40"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n", b"200"),
    ]

    async def answer(request):
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        writer.close()
        return head

    for request, status in requests:
        head = asyncio.run(answer(request))
        assert head.startswith(b"HTTP/1.1 " + status), f"{request[:40]!r} → {head!r}"


def test_a_declined_upgrade_closes_its_connection_and_an_upgrade_with_a_body_gets_no_free_pass(node):
    async def scenario():
        # After a declined upgrade the HTTP parser reads nothing more on that connection: the node says
        # so (Connection: close) and closes, instead of leaving a second request unanswered.
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        declined_closed = await closed_by_server(reader, 5)
        writer.close()
        # A WebSocket upgrade head announcing a body, then silence: served as plain HTTP, with its deadlines.
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nContent-Length: 1\r\n\r\n").encode())
        await writer.drain()
        with_body_closed = await closed_by_server(reader, BODY_TIMEOUT * 3)
        writer.close()
        return head, declined_closed, with_body_closed

    head, declined_closed, with_body_closed = asyncio.run(scenario())
    assert head.startswith(b"HTTP/1.1 200"), head
    assert declined_closed is not None, "the connection stayed open after a declined upgrade"
    assert with_body_closed is not None and with_body_closed < BODY_TIMEOUT + 1.5, f"closed after {with_body_closed}"
