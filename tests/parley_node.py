"""The real parley binary for the Python suites: start a node on a port of its own and call its
JSON API. Test modules import it after putting this folder on sys.path."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PARLEY_BIN", os.path.join(ROOT, ".build", "debug", "parley"))


def start(port, data_dir, log, env=None, args=()):
    """Starts `parley serve` (fast bcrypt, no rate limits, plus `env`) and waits until /ready answers."""
    environment = dict(os.environ, PARLEY_BCRYPT_COST="4", PARLEY_RATE_LIMITS="false", **(env or {}))
    process = subprocess.Popen(
        [BIN, "serve", "--port", str(port), "--data-dir", data_dir, *args], stdout=log, stderr=subprocess.STDOUT, env=environment)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1).read()
            return process
        except (urllib.error.URLError, ConnectionError):
            assert process.poll() is None, "the server exited while starting"
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not become ready")


def api(port, method, path, token=None, body=None, timeout=10):
    """One JSON request; an HTTP error status raises urllib's HTTPError."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(request, data=data, timeout=timeout) as response:
        payload = response.read()
        return json.loads(payload) if payload else None
