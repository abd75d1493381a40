"""The asyncio client against the same real cluster: the same calls and
errors, concurrent waits, and a retried submit that gives the first task."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conftest import ADMIN_TOKEN, READ_TOKEN, Cluster
from drover_client import (
    AsyncClient,
    Conflict,
    Forbidden,
    MalformedRequest,
    NotFound,
    RetryPolicy,
    Unauthorized,
    WaitTimeout,
    task,
)
from proxy import DroppingProxy


def client_for(cluster: Cluster, token: str | None = ADMIN_TOKEN, **kwargs: object) -> AsyncClient:
    return AsyncClient(cluster.url, token=token, **kwargs)  # type: ignore[arg-type]


async def test_submit_get_wait(cluster: Cluster) -> None:
    async with client_for(cluster) as c:
        s = await c.submit("echo", {"async": True}, priority=2, timeout=5)
        t = await c.wait(s.id, timeout=10)
        assert t.state == "succeeded" and t.result == {"async": True}
        got = await c.get(s.id)
        assert got.priority == 2 and got.timeout_ms == 5000 and got.version == t.version


async def test_batch_and_concurrent_waits(cluster: Cluster) -> None:
    async with client_for(cluster) as c:
        receipts = await c.submit_batch([task("sleep", 200) for _ in range(20)] + [{"handler": "echo", "input": 9}])
        done = await c.wait_many([r.id for r in receipts], timeout=15)
        assert [t.id for t in done] == [r.id for r in receipts]
        assert all(t.state == "succeeded" for t in done) and done[-1].result == 9
        # Many clients' calls at once on one client.
        got = await asyncio.gather(*(c.get(r.id) for r in receipts))
        assert [t.id for t in got] == [r.id for r in receipts]


async def test_errors_carry_their_codes(cluster: Cluster) -> None:
    async with client_for(cluster) as c:
        with pytest.raises(NotFound) as e:
            await c.get("0000000000000000000001")
        assert e.value.code == "not_found" and e.value.status == 404
        with pytest.raises(MalformedRequest) as e2:
            await c.submit("echo", 1, not_an_option=True)
        assert e2.value.status == 400
    async with client_for(cluster, "wrong-token-0123456789") as bad:
        with pytest.raises(Unauthorized) as e3:
            await bad.workers()
        assert e3.value.status == 401
    async with client_for(cluster, READ_TOKEN) as reader:
        with pytest.raises(Forbidden):
            await reader.cancel("0000000000000000000001")


async def test_cancel_wait_timeout_list_and_workers(cluster: Cluster) -> None:
    m = {"marker": uuid.uuid4().hex}
    async with client_for(cluster) as c:
        s = await c.submit("noop", m, tags=["nowhere"])
        with pytest.raises(WaitTimeout) as e:
            await c.wait_many([s.id], timeout=0.3)
        assert e.value.tasks[0].state == "queued"
        assert (await c.cancel(s.id)).state == "cancelled"
        with pytest.raises(Conflict):
            await c.cancel(s.id)
        listed = [t async for t in c.iter_tasks("cancelled", page_size=3) if t.input == m]
        assert [t.id for t in listed] == [s.id]
        page = await c.list_tasks(limit=1)
        assert page.tasks or page.next_cursor
        assert len(await c.workers()) == 2


async def test_a_lost_answer_is_retried_with_the_same_key(cluster: Cluster) -> None:
    host, port = cluster.url.removeprefix("http://").split(":")
    proxy = DroppingProxy((host, int(port)), drop=1)
    try:
        async with AsyncClient(proxy.url, token=ADMIN_TOKEN, retry=RetryPolicy(backoff=0.01)) as c:
            s = await c.submit("echo", {"marker": uuid.uuid4().hex})
            assert len(proxy.dropped) == 1
            assert s.id == proxy.dropped[0]["id"] and s.duplicate
    finally:
        proxy.close()
