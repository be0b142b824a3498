"""Uploads against the real binary: memory stays flat while large files stream through, and what
a browser or an outside client sees of the upload API (multipart from a standard library encoder).

Memory: ten concurrent uploads of 25 MiB each to the embedded node (directory store). The node's
peak resident memory (VmHWM in /proc/<pid>/status, the kernel's high-water mark) may rise at most
64 MiB above its resident memory before them: uploads stream to disk, they are never held whole.
"""

import concurrent.futures
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parley_node  # noqa: E402

PORT = int(os.environ.get("PARLEY_UPLOADS_PORT", "18320"))
BASE = f"http://127.0.0.1:{PORT}"
MIB = 1024 * 1024


def api(method, path, token=None, body=None, expect=200):
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(request, data=data, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    assert status == expect, f"{method} {path}: {status} {payload[:300]!r}"
    return json.loads(payload) if payload else None


def start(data_dir, log):
    return parley_node.start(PORT, data_dir, log)


@pytest.fixture
def node():
    """A fresh node on its own data directory, and a signed-up user's token; stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="parley-uploads-") as data_dir, open(os.path.join(data_dir, "parley.log"), "wb") as log:
        process = start(os.path.join(data_dir, "data"), log)
        try:
            suffix = uuid.uuid4().hex[:8]
            token = api("POST", "/api/v1/auth/register", body={
                "username": f"up{suffix}", "email": f"up{suffix}@example.com", "password": "upload-password-1"}, expect=201)["accessToken"]
            yield process, token, os.path.join(data_dir, "data", "blobs")
        finally:
            process.terminate()
            process.wait(timeout=20)


def stored_files(blobs):
    return [os.path.join(root, f) for root, _, files in os.walk(blobs) for f in files]


def memory(pid):
    """Resident and peak resident memory of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def stream_upload(token, size, name):
    """POSTs `size` bytes generated chunk by chunk (the client holds 1 MiB at a time)."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    connection.putrequest("POST", "/api/v1/uploads")
    connection.putheader("authorization", f"Bearer {token}")
    connection.putheader("content-type", "application/octet-stream")
    connection.putheader("x-filename", name)
    connection.putheader("content-length", str(size))
    connection.endheaders()
    chunk = os.urandom(MIB)
    sent = 0
    while sent < size:
        piece = chunk[: min(MIB, size - sent)]
        connection.send(piece)
        sent += len(piece)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    assert response.status == 201, f"{response.status} {payload[:200]!r}"
    return json.loads(payload)["attachment"]


def test_ten_concurrent_25_mib_uploads_keep_memory_flat(node):
    process, token, blobs = node
    # Warm up the upload path once, so the baseline includes what any upload allocates.
    stream_upload(token, 2 * MIB, "warmup.bin")
    before, _ = memory(process.pid)
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        uploads = list(pool.map(lambda i: stream_upload(token, 25 * MIB, f"big-{i}.bin"), range(10)))
    _, peak = memory(process.pid)
    assert all(upload["size"] == 25 * MIB for upload in uploads)
    rise = peak - before
    print(f"RSS before {before / MIB:.1f} MiB, peak during uploads {peak / MIB:.1f} MiB, rise {rise / MIB:.1f} MiB")
    assert rise < 64 * MIB, f"peak RSS rose {rise / MIB:.1f} MiB during ten 25 MiB uploads"
    stored = stored_files(blobs)
    assert len(stored) == 11 and sorted(os.path.getsize(f) for f in stored)[-10:] == [25 * MIB] * 10


def test_an_upload_over_the_limit_is_refused_before_its_body(node):
    """A Content-Length over the limit is answered 413 without reading the body."""
    _, token, blobs = node
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    connection.putrequest("POST", "/api/v1/uploads")
    connection.putheader("authorization", f"Bearer {token}")
    connection.putheader("content-length", str(26 * MIB))
    connection.endheaders()
    connection.send(b"x" * 1024)
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 413
    assert body["error"]["code"] == "upload_too_large"
    assert stored_files(blobs) == []
