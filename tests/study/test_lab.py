"""`make lab`: JupyterLab serves notebooks/ with this environment's kernel and the chosen profile.

The test runs the Makefile's own recipe (``make -o setup lab``: the environment running the tests is
the one served, so nothing is installed) on a free local port with a token it chooses, talks to the
Jupyter server's REST API and one kernel over its websocket, and stops the server by its process id.
No browser is involved.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JUPYTER = Path(sys.prefix) / "bin" / "jupyter"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not JUPYTER.exists(),
                                reason="needs make and jupyter in this environment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


def _api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, the command's output so far as a callable) of a running `make lab PROFILE=smoke`."""
    port, token = _free_port(), uuid.uuid4().hex
    log = tmp_path_factory.mktemp("lab") / "make_lab.log"
    cmd = ["make", "--no-print-directory", "-o", "setup", "lab", f"VENV={sys.prefix}", f"LAB_PORT={port}",
           "PROFILE=smoke"]
    with open(log, "wb") as out:  # its own session: the process id is also the group to stop
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, JUPYTER_TOKEN=token),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 25
        while True:
            try:
                if _get(base + "/api/status", token)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make lab did not answer on port {port}:\n{log.read_text()}")
            time.sleep(0.25)
        yield base, token, lambda: log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the server it exec'd (the test's kernel is shut down by the test)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    deadline = time.monotonic() + 10
    while _answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _answers(port), f"the server on port {port} is still answering after SIGTERM"


def test_lab_prints_url_and_lists_the_notebooks(lab) -> None:
    base, token, output = lab
    text = output()
    assert f"open {base}/lab?token={token}" in text
    assert ("--allow-root" in text) == (os.geteuid() == 0)  # the flag, and the note about it, only for root
    assert "profile smoke" in text
    status, page = _get(base + "/lab", token)
    assert status == 200 and b"JupyterLab" in page
    listed = sorted(item["name"] for item in _api(base, token, "/api/contents/")["content"]
                    if item["type"] == "notebook")
    assert listed == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert listed, "no notebooks served"


def test_lab_kernel_is_this_environment_with_the_profile(lab) -> None:
    websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server
    base, token, _ = lab
    specs = _api(base, token, "/api/kernelspecs")
    assert specs["default"] == "python3"
    notebook = sorted((ROOT / "notebooks").glob("*.ipynb"))[0].name  # opened as JupyterLab opens one:
    session = _api(base, token, "/api/sessions", "POST",      # a session for the notebook's path
                   {"path": notebook, "type": "notebook", "name": notebook, "kernel": {"name": "python3"}})
    kernel = session["kernel"]
    try:
        ws = websocket.create_connection(f"ws{base[4:]}/api/kernels/{kernel['id']}/channels?token={token}",
                                         timeout=20)
        msg_id = uuid.uuid4().hex
        code = "import os, sys; print(repr((sys.executable, os.environ.get('HTR_PROFILE'), os.getcwd())))"
        ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                                       "session": uuid.uuid4().hex, "version": "5.3"},
                            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                            "content": {"code": code, "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False}}))
        printed = None
        deadline = time.monotonic() + 20
        while printed is None and time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                printed = msg["content"]["text"]
            elif msg["msg_type"] == "error":
                pytest.fail("\n".join(msg["content"]["traceback"]))
        ws.close()
    finally:
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")  # shuts its kernel down
    assert printed is not None, "the kernel printed nothing"
    executable, profile, cwd = ast.literal_eval(printed)
    assert executable == sys.executable
    assert profile == "smoke"
    assert Path(cwd).resolve() == (ROOT / "notebooks").resolve()
