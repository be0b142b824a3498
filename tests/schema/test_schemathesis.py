"""Schema fuzzing of the whole REST API with schemathesis (an outside tool that knows nothing of
Parley but its served OpenAPI document): every operation, with a real signed-in user's token,
positive and negative inputs. No answer may be a server error (5xx), and every answer must match
the schema the document gives for its status.

The operations that end the caller's session (logout, signing a session out, changing the
password) run in a second pass as another user, so that they do not cut the first pass short.
"""

import os
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parley_node  # noqa: E402

PORT = int(os.environ.get("PARLEY_SCHEMA_PORT", "18350"))
BASE = f"http://127.0.0.1:{PORT}"
EXAMPLES = os.environ.get("PARLEY_SCHEMA_EXAMPLES", "30")
SESSION_ENDING = ["logout", "revokeSession", "changePassword"]
CHECKS = "not_a_server_error,response_schema_conformance"


def api(method, path, token=None, body=None):
    return parley_node.api(PORT, method, path, token, body)


def register():
    name = "s" + uuid.uuid4().hex[:8]
    reply = api("POST", "/api/v1/auth/register", body={"username": name, "email": f"{name}@example.com", "password": "schema-password"})
    return reply["user"]["id"], reply["accessToken"]


def schemathesis(token, env, *selection):
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{BASE}/api/v1/openapi.yaml", "--url", BASE, "--checks", CHECKS, "--max-examples", EXAMPLES,
               "--workers", "1", "--seed", os.environ.get("PARLEY_SCHEMA_SEED", "20261203"), "--no-color",
               "--phases", "examples,coverage,fuzzing,stateful", "-H", f"Authorization: Bearer {token}", *selection]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))
    return result.returncode, result.stdout + result.stderr


def test_schemathesis_finds_no_server_error_and_no_schema_violation():
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile() as log:
        process = parley_node.start(PORT, data_dir, log)
        try:
            me, token = register()
            friend, _ = register()
            group = api("POST", "/api/v1/conversations", token, {"type": "group", "name": "Schema", "memberIds": [friend]})["conversation"]["id"]
            message = api("POST", f"/api/v1/conversations/{group}/messages", token, {"body": "hello", "clientMsgId": "st-1"})["message"]["id"]
            env = dict(os.environ, SCHEMATHESIS_HOOKS="st_hooks", PARLEY_ST_CONVERSATION=group, PARLEY_ST_MESSAGE=message, PARLEY_ST_USER=friend)

            status, output = schemathesis(token, env, *[arg for op in SESSION_ENDING for arg in ("--exclude-operation-id", op)])
            print(output[-3000:])
            assert status == 0, output[-8000:]

            _, other = register()
            status, output = schemathesis(other, env, *[arg for op in SESSION_ENDING for arg in ("--include-operation-id", op)])
            print(output[-2000:])
            assert status == 0, output[-8000:]
            assert process.poll() is None, "the node died"
        finally:
            process.terminate()
            process.wait(timeout=20)
