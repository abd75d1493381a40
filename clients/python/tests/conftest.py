"""One real drover cluster for the whole run: ``drover dev`` (its own
redis-server, a coordinator, a distributor, two workers) on free ports,
with two API tokens (admin, and read-only) and a worker profile whose
``http`` handlers point at two Python services in this process that use
``drover_client.handler`` (one on the stdlib's http.server through
``handle``, one on wsgiref through ``wsgi_app``). The binary is
``$DROVER_BIN``, else the repository's target/release/drover."""

from __future__ import annotations

import os
import re
import signal
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from drover_client import Client
from drover_client.handler import Fail, Fences, TaskRequest, handle, wsgi_app

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "pytest-admin-token-0123456789"
READ_TOKEN = "pytest-read-token-0123456789"


@dataclass
class Hook:
    """A service behind an http handler: what it was sent, and its fences."""

    url: str = ""
    fences: Fences = field(default_factory=Fences)
    seen: list[TaskRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, req: TaskRequest) -> Any:
        """The task function: ``{"op": "echo"}`` answers with what it got,
        ``{"op": "flaky"}`` fails its first attempt, ``{"op": "boom"}`` raises."""
        with self.lock:
            self.seen.append(req)
        op = req.input.get("op") if isinstance(req.input, dict) else None
        if op == "flaky" and req.attempt == 1:
            raise Fail("first attempt fails on purpose", 503)
        if op == "boom":
            raise RuntimeError("the service broke")
        return {"input": req.input, "task_id": req.task_id, "attempt": req.attempt, "fence": str(req.fence)}

    def requests_for(self, task_id: str) -> list[TaskRequest]:
        with self.lock:
            return [r for r in self.seen if r.task_id == task_id]


def _plain_server(hook: Hook) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = handle(self.headers.items(), body, hook.run, hook.fences)
            self.send_response(reply.status)
            for k, v in reply.headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Cluster:
    url: str
    log: Path
    plain: Hook
    wsgi: Hook

    def client(self, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> Client:
        return Client(self.url, token=token, **kwargs)


def _serve(server: Any) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = Path(os.environ.get("DROVER_BIN", REPO / "target" / "release" / "drover"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build --release` first (or set DROVER_BIN)")
    plain, wsgi = Hook(), Hook()
    plain_server = _plain_server(plain)
    wsgi_server = make_server("127.0.0.1", 0, wsgi_app(wsgi.run, wsgi.fences),
                              server_class=_ThreadingWSGIServer, handler_class=_QuietWSGIHandler)
    plain.url = f"http://127.0.0.1:{plain_server.server_address[1]}/hook"
    wsgi.url = f"http://127.0.0.1:{wsgi_server.server_address[1]}/hook"
    _serve(plain_server)
    _serve(wsgi_server)

    tmp = tmp_path_factory.mktemp("drover")
    profile = tmp / "worker.toml"
    profile.write_text(f"""
log_format = "text"
[timing]
backoff_base = "50ms"
backoff_max = "200ms"
[worker]
grace = "1s"
[handlers]
noop = {{ kind = "builtin" }}
echo = {{ kind = "builtin" }}
sleep = {{ kind = "builtin" }}
fail = {{ kind = "builtin" }}
hook = {{ kind = "http", url = "{plain.url}", timeout = "10s" }}
wsgi_hook = {{ kind = "http", url = "{wsgi.url}", timeout = "10s" }}
""")
    log = tmp / "drover-dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    env["DROVER_API_TOKENS"] = f"{ADMIN_TOKEN}:admin;{READ_TOKEN}:read"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), "dev", "--config", str(profile), "--workers", "2",
             "--http", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
        )
    try:
        url = _wait_ready(proc, log)
        yield Cluster(url=url, log=log, plain=plain, wsgi=wsgi)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        plain_server.shutdown()
        wsgi_server.shutdown()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The API's URL from the banner, once both workers have registered."""
    deadline = time.monotonic() + 30
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"drover dev exited ({proc.returncode}):\n{log.read_text()}")
        if url is None:
            m = re.search(r"drover dev: API (http://\S+?),", log.read_text(errors="replace"))
            url = m.group(1) if m else None
        if url is not None:
            try:
                r = httpx.get(f"{url}/v1/workers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                if r.status_code == 200 and len(r.json()["workers"]) == 2:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    pytest.fail(f"drover dev did not become ready:\n{log.read_text()}")


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.client() as c:
        yield c
