#!/usr/bin/env python3
"""End-to-end Parley example: two users, one conversation, a real-time message and a receipt.

    pip install websockets
    python3 examples/chat.py [http://127.0.0.1:8080]

Registers alice and bob (random suffix), opens a direct conversation, connects both over
WebSocket, sends a message from alice, shows bob receiving it live, and alice receiving bob's read
receipt. Exits non-zero if anything does not arrive. Uses only the standard library plus websockets.
"""
import asyncio
import json
import secrets
import sys
import urllib.request

import websockets

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
WS = BASE.replace("http", "ws", 1) + "/api/v1/ws"


def post(path, body, token=None):
    request = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def register(name):
    suffix = secrets.token_hex(3)
    return post("/api/v1/auth/register", {
        "username": f"{name}_{suffix}", "email": f"{name}_{suffix}@example.com", "password": "correct horse battery",
    })


async def frame_of_type(socket, wanted):
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        if frame["type"] == wanted:
            return frame


async def main():
    alice, bob = register("alice"), register("bob")
    conversation = post("/api/v1/conversations", {"type": "direct", "userId": bob["user"]["id"]},
                        alice["accessToken"])["conversation"]["id"]

    async with websockets.connect(WS) as alice_ws, websockets.connect(WS) as bob_ws:
        # Authenticate with a first frame (a browser can use the login cookie instead).
        for socket, user in ((alice_ws, alice), (bob_ws, bob)):
            await socket.send(json.dumps({"type": "auth", "token": user["accessToken"]}))
            hello = await frame_of_type(socket, "hello")
            print(f"{user['user']['username']} connected: session {hello['sessionId'][:8]}…")

        await alice_ws.send(json.dumps({"type": "send", "conversationId": conversation,
                                        "clientMsgId": "demo-1", "body": "Hi Bob! 👋"}))
        ack = await frame_of_type(alice_ws, "ack")
        print(f"alice: stored as seq {ack['message']['seq']}")

        received = await frame_of_type(bob_ws, "message")
        print(f"bob got: {received['message']['body']!r}")

        await bob_ws.send(json.dumps({"type": "read", "conversationId": conversation,
                                      "seq": received["message"]["seq"]}))
        receipt = await frame_of_type(alice_ws, "receipt")
        print(f"alice: bob has {receipt['kind']} up to seq {receipt['seq']}")

        # Catch up after a reconnect: everything after seq 0, then `synced`.
        await bob_ws.send(json.dumps({"type": "sync", "cursors": {conversation: 0}}))
        synced = await frame_of_type(bob_ws, "synced")
        print(f"bob synced {conversation[:8]}…: hasMore={synced['hasMore']}")
    print("example: 1 passed, 0 failed")


if __name__ == "__main__":
    asyncio.run(main())
