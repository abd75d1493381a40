"""``drover_client.handler`` end to end: drover's http handler POSTs each
task to the Python services of the fixture (one on http.server through
``handle``, one on wsgiref through ``wsgi_app``), which read drover's
headers, keep fences, and answer with the result or a failure. The ASGI
wrapper is driven through its own protocol."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from conftest import Cluster, Hook
from drover_client import Client
from drover_client.handler import (
    BadTaskRequest,
    Fail,
    Fence,
    Fences,
    TaskRequest,
    asgi_app,
    parse_request,
)


@pytest.mark.parametrize("handler", ["hook", "wsgi_hook"])
def test_a_task_reaches_the_service_with_its_headers(client: Client, cluster: Cluster, handler: str) -> None:
    hook: Hook = cluster.plain if handler == "hook" else cluster.wsgi
    s = client.submit(handler, {"op": "echo", "n": 1})
    t = client.wait(s.id, timeout=10)
    assert t.state == "succeeded", t.error
    assert t.result == {"input": {"op": "echo", "n": 1}, "task_id": s.id, "attempt": 1, "fence": t.fence}
    [seen] = hook.requests_for(s.id)
    assert seen.attempt == 1 and str(seen.fence) == t.fence
    assert seen.headers["content-type"] == "application/json"
    assert hook.fences.highest(s.id) == Fence.parse(t.fence or "")


def test_a_failed_attempt_is_retried_under_a_higher_fence(client: Client, cluster: Cluster) -> None:
    s = client.submit("hook", {"op": "flaky"}, max_attempts=3)
    t = client.wait(s.id, timeout=10)
    assert t.state == "succeeded" and t.attempts == 2
    first, second = cluster.plain.requests_for(s.id)
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.fence > first.fence
    assert t.result["attempt"] == 2 and t.result["fence"] == str(second.fence)


def test_an_exception_fails_the_task_with_its_message(client: Client) -> None:
    s = client.submit("wsgi_hook", {"op": "boom"}, max_attempts=1)
    t = client.wait(s.id, timeout=10)
    assert t.state == "dead"
    assert t.error is not None and "HTTP 500" in t.error and "RuntimeError: the service broke" in t.error


def test_a_stale_fence_is_refused(client: Client, cluster: Cluster) -> None:
    s = client.submit("hook", {"op": "echo"})
    t = client.wait(s.id, timeout=10)
    current = Fence.parse(t.fence or "")
    # What a worker that lost its lease would still send: a lower token.
    stale = Fence(current.epoch, current.fence - 1) if current.fence else Fence(current.epoch - 1, 0)
    headers = {"X-Drover-Task-Id": s.id, "X-Drover-Attempt": "1", "X-Drover-Fence": str(stale)}
    r = httpx.post(cluster.plain.url, json={"op": "echo"}, headers=headers)
    assert r.status_code == 409 and "stale fence" in r.text
    older_epoch = {**headers, "X-Drover-Fence": f"{current.epoch - 1}.{current.fence + 1000}"}
    assert httpx.post(cluster.plain.url, json={}, headers=older_epoch).status_code == 409
    newer = {**headers, "X-Drover-Fence": f"{current.epoch}.{current.fence + 1}", "X-Drover-Attempt": "2"}
    r = httpx.post(cluster.plain.url, json={"op": "echo"}, headers=newer)
    assert r.status_code == 200 and r.json()["attempt"] == 2
    # Not from drover at all.
    r = httpx.post(cluster.wsgi.url, json={})
    assert r.status_code == 400 and "x-drover-task-id" in r.text
    assert httpx.get(cluster.wsgi.url).status_code == 405


def test_parse_request_reads_drover_headers() -> None:
    req = parse_request({"X-Drover-Task-Id": "t1", "X-Drover-Attempt": "3", "X-Drover-Fence": "7.42"}, b'{"a": 1}')
    assert (req.task_id, req.attempt, req.fence, req.input) == ("t1", 3, Fence(7, 42), {"a": 1})
    assert parse_request([("x-drover-task-id", "t"), ("x-drover-attempt", "1"), ("x-drover-fence", "1.1")], b"").input is None
    for bad_headers, body in [({}, b"{}"), ({"X-Drover-Task-Id": "t", "X-Drover-Attempt": "1", "X-Drover-Fence": "7"}, b"{}"),
                              ({"X-Drover-Task-Id": "t", "X-Drover-Attempt": "1", "X-Drover-Fence": "1.1"}, b"{nope")]:
        with pytest.raises(BadTaskRequest):
            parse_request(bad_headers, body)
    # The epoch orders first: a new epoch's first fence beats an old epoch's last.
    assert Fence(2, 0) > Fence(1, 999) and Fence.parse("2.0") == Fence(2, 0)


def test_fences_are_kept_per_task() -> None:
    f = Fences(max_tasks=2)
    assert f.admit("a", Fence(1, 5)) and f.admit("a", Fence(1, 5)) and not f.admit("a", Fence(1, 4))
    assert f.admit("b", Fence(1, 1)), "another task's token does not matter"
    f.admit("c", Fence(1, 1))
    assert f.highest("a") is None, "the oldest task is forgotten past max_tasks"


async def _call_asgi(app: Any, method: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body[:3], "more_body": True},
                {"type": "http.request", "body": body[3:], "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": method,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    start, body_msg = sent
    return start["status"], body_msg["body"]


async def test_the_asgi_app_answers_like_the_others() -> None:
    async def run(req: TaskRequest) -> Any:
        await asyncio.sleep(0)
        if req.input == "fail":
            raise Fail("asked to fail", 422)
        return {"got": req.input, "fence": str(req.fence)}

    app = asgi_app(run, Fences())
    h = {"X-Drover-Task-Id": "t1", "X-Drover-Attempt": "1", "X-Drover-Fence": "3.9"}
    status, body = await _call_asgi(app, "POST", h, b'{"x": [1, 2]}')
    assert status == 200 and json.loads(body) == {"got": {"x": [1, 2]}, "fence": "3.9"}
    assert (await _call_asgi(app, "POST", {**h, "X-Drover-Fence": "3.8"}, b"{}"))[0] == 409
    assert await _call_asgi(app, "POST", {**h, "X-Drover-Fence": "3.10"}, b'"fail"') == (422, b"asked to fail")
    assert (await _call_asgi(app, "GET", h, b""))[0] == 405
