"""The sync client against a real ``drover dev``: every call, the options
submit takes, error codes as exceptions, and retries that never duplicate."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import ADMIN_TOKEN, READ_TOKEN, Cluster
from drover_client import (
    APIError,
    Client,
    Conflict,
    Forbidden,
    InvalidTask,
    MalformedRequest,
    NotFound,
    RetryPolicy,
    TaskState,
    TransportError,
    Unauthorized,
    UnknownHandler,
    WaitTimeout,
    task,
)
from proxy import DroppingProxy

#: No worker has this tag, so a task with it stays queued until cancelled.
NOWHERE = ["nowhere"]


def marker() -> dict[str, str]:
    return {"marker": uuid.uuid4().hex}


def test_submit_and_wait_returns_the_result(client: Client) -> None:
    s = client.submit("echo", {"hello": "world"})
    assert s.state == TaskState.QUEUED and not s.duplicate and s.idempotency_key
    t = client.wait(s.id, timeout=10)
    assert t.id == s.id and t.state == "succeeded" and t.terminal
    assert t.result == {"hello": "world"} and t.input == {"hello": "world"}
    assert t.attempts == 1 and t.fence and t.finished_ms
    assert client.get(s.id) == t


def test_every_submit_option_reaches_the_task(client: Client) -> None:
    s = client.submit("echo", 7, priority=5, max_attempts=2, timeout=timedelta(seconds=5), delay=0.3)
    assert s.state == "scheduled"
    t = client.get(s.id)
    assert (t.priority, t.max_attempts, t.timeout_ms) == (5, 2, 5000)
    # run_at_ms is the coordinator's now plus the delay; created_ms is taken
    # a moment later, so allow a little either way.
    assert t.run_at_ms is not None and abs(t.run_at_ms - (t.created_ms + 300)) < 100
    done = client.wait(s.id, timeout=10)
    assert done.state == "succeeded" and done.started_ms is not None and done.started_ms >= t.run_at_ms - 50

    at = datetime.now(timezone.utc) + timedelta(hours=1)
    later = client.submit("noop", None, run_at_ms=at, timeout="250ms", tags=NOWHERE)
    t = client.get(later.id)
    assert later.state == "scheduled" and t.run_at_ms == round(at.timestamp() * 1000)
    assert t.timeout_ms == 250 and t.tags == NOWHERE
    client.cancel(later.id)


def test_options_pass_through_by_their_api_name(client: Client) -> None:
    # The server refuses fields it does not know: a name it does not take yet
    # is sent as given, and so answered 400 rather than dropped.
    with pytest.raises(MalformedRequest) as e:
        client.submit("echo", 1, queue_name_of_the_future="x")
    assert e.value.status == 400 and e.value.code == "malformed_request"
    assert "queue_name_of_the_future" in e.value.message
    # A known field passes through the extras just the same.
    s = client.submit("echo", 1, **{"priority": 3})  # type: ignore[arg-type]
    assert client.get(s.id).priority == 3


def test_batch_submit_and_wait_many(client: Client) -> None:
    items = [task("echo", {"i": i}, priority=i) for i in range(5)] + [{"handler": "noop", "max_attempts": 1}]
    receipts = client.submit_batch(items)
    assert len(receipts) == 6 and len({r.id for r in receipts}) == 6
    assert all(not r.duplicate for r in receipts)
    done = client.wait_many([r.id for r in receipts], timeout=10)
    assert [t.id for t in done] == [r.id for r in receipts]
    assert [t.result for t in done] == [{"i": i} for i in range(5)] + [None]
    assert all(t.state == "succeeded" for t in done)


def test_a_batch_with_one_bad_task_is_refused_whole(client: Client) -> None:
    m = marker()
    with pytest.raises(UnknownHandler) as e:
        client.submit_batch([task("echo", m), task("no-such-handler", m)])
    assert e.value.status == 422 and e.value.code == "unknown_handler" and "tasks[1]" in e.value.message
    assert not [t for t in client.iter_tasks() if t.input == m]


def test_not_found_for_an_unknown_task(client: Client) -> None:
    for missing in ("0000000000000000000001", "not-a-task-id"):
        with pytest.raises(NotFound) as e:
            client.get(missing)
        assert e.value.status == 404 and e.value.code == "not_found"
    with pytest.raises(NotFound):
        client.wait("0000000000000000000001", timeout=1)
    with pytest.raises(NotFound):
        client.cancel("0000000000000000000001")


def test_bad_input_is_an_error_with_its_code(client: Client) -> None:
    with pytest.raises(MalformedRequest) as e:
        client.list_tasks(limit=0)
    assert e.value.status == 400
    with pytest.raises(MalformedRequest):
        client.list_tasks(cursor="not-a-cursor")
    with pytest.raises(InvalidTask) as e2:
        client.submit("echo", 1, max_attempts=0)
    assert e2.value.status == 422 and e2.value.code == "invalid_task" and "max_attempts" in e2.value.message
    with pytest.raises(InvalidTask):
        client.submit("echo", 1, delay="1s", run_at_ms=1)
    with pytest.raises(InvalidTask):
        client.submit("echo", 1, tags=["no spaces"])
    with pytest.raises(UnknownHandler):
        client.submit("nobody-offers-this", 1)


def test_tokens_wrong_missing_and_short_of_scope(cluster: Cluster) -> None:
    for token in ("wrong-token-0123456789", None):
        with cluster.client(token) as c, pytest.raises(Unauthorized) as e:
            c.workers()
        assert e.value.status == 401 and e.value.code == "unauthorized"
    with cluster.client(READ_TOKEN) as reader:
        assert len(reader.workers()) == 2
        with pytest.raises(Forbidden) as e2:
            reader.submit("echo", 1)
        assert e2.value.status == 403 and e2.value.code == "forbidden" and "submit" in e2.value.message
        assert isinstance(e2.value, APIError)


def test_cancel_queued_then_again_is_a_conflict(client: Client) -> None:
    s = client.submit("noop", None, tags=NOWHERE)
    c = client.cancel(s.id)
    assert (c.id, c.state, c.cancel_requested) == (s.id, "cancelled", False)
    assert client.get(s.id).state == "cancelled"
    with pytest.raises(Conflict) as e:
        client.cancel(s.id)
    assert e.value.status == 409 and e.value.code == "conflict"


def test_cancel_running_stops_it(client: Client) -> None:
    s = client.submit("sleep", 30000)
    deadline = time.monotonic() + 10
    while client.get(s.id).state != "running":
        assert time.monotonic() < deadline, "the sleep task never started"
        time.sleep(0.05)
    c = client.cancel(s.id)
    assert c.state in ("running", "cancelled")
    assert c.cancel_requested == (c.state == "running")
    assert client.wait(s.id, timeout=10).state == "cancelled"


def test_wait_timeout_raises_with_the_latest_record(client: Client) -> None:
    s = client.submit("noop", None, tags=NOWHERE)
    with pytest.raises(WaitTimeout) as e:
        client.wait(s.id, timeout=0.3)
    assert e.value.task.id == s.id and e.value.task.state == "queued"
    done = client.submit("noop")
    with pytest.raises(WaitTimeout) as e2:
        client.wait_many([done.id, s.id], timeout=2)
    assert [t.id for t in e2.value.tasks] == [done.id, s.id]
    assert [t.state for t in e2.value.tasks] == ["succeeded", "queued"]
    client.cancel(s.id)


def test_a_failing_task_dies_with_its_error(client: Client) -> None:
    s = client.submit("fail", {"message": "nope"}, max_attempts=1)
    t = client.wait(s.id, timeout=10)
    assert t.state == "dead" and t.attempts == 1 and t.error is not None and "nope" in t.error


def test_list_pages_through_every_task(client: Client) -> None:
    m = marker()
    ids = {r.id for r in client.submit_batch([task("noop", m) for _ in range(30)])}
    client.wait_many(ids, timeout=10)
    seen: set[str] = set()
    cursor = None
    pages = 0
    while True:
        page = client.list_tasks("succeeded", limit=5, cursor=cursor)
        pages += 1
        assert all(t.state == "succeeded" for t in page.tasks)
        seen |= {t.id for t in page.tasks if t.input == m}
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids and pages > 1
    assert {t.id for t in client.iter_tasks(page_size=7) if t.input == m} == ids
    assert not [t for t in client.iter_tasks("queued") if t.input == m]


def test_workers(client: Client) -> None:
    workers = client.workers()
    assert sorted(w.id for w in workers) == ["dev-worker-1", "dev-worker-2"]
    for w in workers:
        assert {"echo", "noop", "hook", "wsgi_hook"} <= set(w.handlers)
        assert w.capacity > 0 and w.last_heartbeat_ms > 0 and w.version and not w.draining


def test_the_same_idempotency_key_returns_the_first_task(client: Client) -> None:
    key = f"test-{uuid.uuid4().hex}"
    first = client.submit("echo", 1, idempotency_key=key)
    again = client.submit("echo", 2, idempotency_key=key)
    assert again.id == first.id and again.duplicate and not first.duplicate
    assert again.idempotency_key == key
    batch = client.submit_batch([task("echo", 3, idempotency_key=key)])
    assert batch[0].id == first.id and batch[0].duplicate


def test_a_submit_whose_answer_was_lost_is_retried_without_a_duplicate(cluster: Cluster) -> None:
    host, port = cluster.url.removeprefix("http://").split(":")
    proxy = DroppingProxy((host, int(port)), drop=1)
    fast = RetryPolicy(attempts=3, backoff=0.01)
    try:
        with cluster.client(retry=fast) as direct, Client(proxy.url, token=ADMIN_TOKEN, retry=fast) as c:
            m = marker()
            s = c.submit("echo", m)
            assert len(proxy.dropped) == 1, "the proxy lost the first answer"
            lost = proxy.dropped[0]
            assert lost["duplicate"] is False
            assert s.id == lost["id"] and s.duplicate, "the retry returned the first task"
            assert [t.id for t in direct.iter_tasks() if t.input == m] == [s.id]

            proxy.drop = 2
            b = c.submit_batch([task("echo", m), task("noop", m)])
            assert [r.id for r in b] == [r["id"] for r in proxy.dropped[1]["tasks"]]
            assert all(r.duplicate for r in b)
            assert len([t for t in direct.iter_tasks() if t.input == m]) == 3
    finally:
        proxy.close()


def test_without_retries_a_lost_answer_is_a_transport_error(cluster: Cluster) -> None:
    host, port = cluster.url.removeprefix("http://").split(":")
    proxy = DroppingProxy((host, int(port)), drop=1)
    try:
        with Client(proxy.url, token=ADMIN_TOKEN, retry=RetryPolicy(attempts=1)) as c:
            with pytest.raises(TransportError) as e:
                c.submit("echo", marker())
            assert isinstance(e.value.__cause__, httpx.TransportError)
    finally:
        proxy.close()


def test_an_unreachable_api_is_a_transport_error_after_the_retries() -> None:
    with Client(f"http://127.0.0.1:{closed_port()}", token="x" * 20, retry=RetryPolicy(attempts=3, backoff=0.01)) as c:
        with pytest.raises(TransportError) as e:
            c.workers()
        assert isinstance(e.value.__cause__, httpx.ConnectError)


def closed_port() -> int:
    """A port that was just bound and released, so nothing listens on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
