"""The asyncio client, method for method the twin of ``client.Client``
(what each call sends is shared in ``_calls``); ``wait_many`` long-polls
its tasks concurrently, at most :data:`WAITERS` at once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from . import _calls
from .errors import WaitTimeout
from .options import TaskSpec, batch_item, task_body
from .retry import RetryPolicy
from .types import CancelResult, Submitted, Task, TaskPage, Worker

#: Long-polls in flight at once in ``wait_many`` (as the CLI does).
WAITERS = 64


class AsyncClient:
    """``async with AsyncClient(url, token=...) as c: await c.submit(...)``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        ca_file: _calls.FilePath | None = None,
        client_cert: _calls.FilePath | None = None,
        client_key: _calls.FilePath | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._headers = _calls.auth_headers(token)
        self._own_http = http is None
        if http is not None and (ca_file or client_cert or client_key):
            raise ValueError("give TLS options to your own http client, not beside it")
        self._http = http or httpx.AsyncClient(timeout=timeout, verify=_calls.tls_verify(ca_file, client_cert, client_key))

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncClient:
        """From ``DROVER_API`` and ``DROVER_API_TOKEN`` (and ``DROVER_API_CA_FILE``,
        ``DROVER_API_CLIENT_CERT``, ``DROVER_API_CLIENT_KEY``), as the CLI reads
        them; ``kwargs`` win."""
        if "http" not in kwargs:
            kwargs = {**_calls.tls_from_env(), **kwargs}
        return cls(os.environ.get("DROVER_API", "http://127.0.0.1:7070"), os.environ.get("DROVER_API_TOKEN"), **kwargs)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _calls.Call) -> Any:
        attempt = 1
        while True:
            try:
                resp = await self._http.request(
                    call.method,
                    self.url + call.path,
                    params=call.params or None,
                    json=call.json,
                    headers={**self._headers, **call.headers},
                    timeout=self.timeout + call.extra_timeout,
                )
            except httpx.TransportError as e:
                await asyncio.sleep(_calls.retry_after_error(self.retry, attempt, e, call))
                attempt += 1
                continue
            pause = _calls.retry_after_answer(self.retry, attempt, resp, call)
            if pause is None:
                return _calls.decode(resp)
            await asyncio.sleep(pause)
            attempt += 1

    async def submit(
        self,
        handler: str,
        input: Any = None,
        *,
        tags: list[str] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: str | float | timedelta | None = None,
        run_at_ms: int | datetime | None = None,
        delay: str | float | timedelta | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> Submitted:
        """As ``Client.submit``."""
        body = task_body(handler, input, dict(
            tags=tags, priority=priority, max_attempts=max_attempts, timeout=timeout,
            run_at_ms=run_at_ms, delay=delay, idempotency_key=idempotency_key, **extra,
        ))
        return Submitted.from_json(await self._send(_calls.submit(body)), body["idempotency_key"])

    async def submit_batch(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[Submitted]:
        """As ``Client.submit_batch``."""
        bodies = [batch_item(t) for t in tasks]
        out = (await self._send(_calls.submit_batch(bodies)))["tasks"]
        return [Submitted.from_json(s, b["idempotency_key"]) for s, b in zip(out, bodies, strict=True)]

    async def get(self, task_id: str) -> Task:
        return Task.from_json(await self._send(_calls.get(task_id)))

    async def wait(self, task_id: str, timeout: float | None = 60.0) -> Task:
        """As ``Client.wait``."""
        deadline = _calls.deadline_for(timeout)
        while True:
            task = Task.from_json(await self._send(_calls.wait(task_id, _calls.poll_for(deadline))))
            if task.terminal:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout([task])

    async def wait_many(self, task_ids: Iterable[str], timeout: float | None = 60.0) -> list[Task]:
        """As ``Client.wait_many``, the waits running concurrently."""
        gate = asyncio.Semaphore(WAITERS)
        deadline = _calls.deadline_for(timeout)

        async def one(task_id: str) -> tuple[Task, bool]:
            async with gate:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    return await self.wait(task_id, left), False
                except WaitTimeout as e:
                    return e.task, True

        results = await asyncio.gather(*(one(i) for i in task_ids))
        tasks = [t for t, _ in results]
        if any(late for _, late in results):
            raise WaitTimeout(tasks)
        return tasks

    async def cancel(self, task_id: str) -> CancelResult:
        """As ``Client.cancel``."""
        return CancelResult.from_json(await self._send(_calls.cancel(task_id)))

    async def list_tasks(
        self, state: str | None = None, *, limit: int | None = None, cursor: str | None = None
    ) -> TaskPage:
        return TaskPage.from_json(await self._send(_calls.list_tasks(state, limit, cursor)))

    async def iter_tasks(self, state: str | None = None, *, page_size: int = 100) -> AsyncIterator[Task]:
        """As ``Client.iter_tasks``: ``async for task in c.iter_tasks(): ...``."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = await self.list_tasks(state, limit=page_size, cursor=cursor)
            for t in page.tasks:
                if t.id not in seen:
                    seen.add(t.id)
                    yield t
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def workers(self) -> list[Worker]:
        return [Worker.from_json(w) for w in (await self._send(_calls.workers()))["workers"]]
