"""The synchronous client. Every method is one API route (``wait_many`` and
``iter_tasks`` are loops over one), sent through :meth:`Client._send`, which
retries as :class:`RetryPolicy` says and turns error answers into
exceptions. The asyncio twin is ``aio.AsyncClient``; what a call sends is
shared with it in ``_calls``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from . import _calls
from .errors import WaitTimeout
from .options import TaskSpec, batch_item, task_body
from .retry import RetryPolicy
from .types import CancelResult, Submitted, Task, TaskPage, Worker


class Client:
    """A drover API client: ``Client("http://127.0.0.1:7070", token="drv_…")``.

    ``timeout`` is seconds per request (a long-poll adds its own length);
    for an ``https://`` API, ``ca_file`` names the PEM CA certificates to
    trust (instead of the default roots) and ``client_cert`` (and
    ``client_key``, unless in the same file) the certificate to present to
    an API that requires one. ``http`` may be an ``httpx.Client`` of your own
    (proxies, other TLS settings), which ``close`` then leaves open."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
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
        self._http = http or httpx.Client(timeout=timeout, verify=_calls.tls_verify(ca_file, client_cert, client_key))

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """From ``DROVER_API`` and ``DROVER_API_TOKEN`` (and ``DROVER_API_CA_FILE``,
        ``DROVER_API_CLIENT_CERT``, ``DROVER_API_CLIENT_KEY``), as the CLI reads
        them; ``kwargs`` win."""
        if "http" not in kwargs:
            kwargs = {**_calls.tls_from_env(), **kwargs}
        return cls(os.environ.get("DROVER_API", "http://127.0.0.1:7070"), os.environ.get("DROVER_API_TOKEN"), **kwargs)

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _calls.Call) -> Any:
        attempt = 1
        while True:
            try:
                resp = self._http.request(
                    call.method,
                    self.url + call.path,
                    params=call.params or None,
                    json=call.json,
                    headers={**self._headers, **call.headers},
                    timeout=self.timeout + call.extra_timeout,
                )
            except httpx.TransportError as e:
                time.sleep(_calls.retry_after_error(self.retry, attempt, e, call))
                attempt += 1
                continue
            pause = _calls.retry_after_answer(self.retry, attempt, resp, call)
            if pause is None:
                return _calls.decode(resp)
            time.sleep(pause)
            attempt += 1

    def submit(
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
        """Submits one task. Without an ``idempotency_key`` one is made, so a
        retry after a broken connection returns the same task. Options a newer
        server takes can be given by their API name in ``extra``."""
        body = task_body(handler, input, dict(
            tags=tags, priority=priority, max_attempts=max_attempts, timeout=timeout,
            run_at_ms=run_at_ms, delay=delay, idempotency_key=idempotency_key, **extra,
        ))
        return Submitted.from_json(self._send(_calls.submit(body)), body["idempotency_key"])

    def submit_batch(self, tasks: Iterable[TaskSpec | Mapping[str, Any]]) -> list[Submitted]:
        """Submits tasks in one request (``drover_client.task(...)`` or mappings
        with ``handler``, ``input`` and options): all are validated before any
        is written, and each gets an idempotency key unless it has one."""
        bodies = [batch_item(t) for t in tasks]
        out = self._send(_calls.submit_batch(bodies))["tasks"]
        return [Submitted.from_json(s, b["idempotency_key"]) for s, b in zip(out, bodies, strict=True)]

    def get(self, task_id: str) -> Task:
        return Task.from_json(self._send(_calls.get(task_id)))

    def wait(self, task_id: str, timeout: float | None = 60.0) -> Task:
        """Waits until the task finishes (``timeout`` seconds at most, ``None``
        for no limit) and returns its record; raises :class:`WaitTimeout`,
        with the latest record, when it has not finished by then."""
        deadline = _calls.deadline_for(timeout)
        while True:
            task = Task.from_json(self._send(_calls.wait(task_id, _calls.poll_for(deadline))))
            if task.terminal:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout([task])

    def wait_many(self, task_ids: Iterable[str], timeout: float | None = 60.0) -> list[Task]:
        """Waits for every task (one shared deadline) and returns their records
        in the order given; raises :class:`WaitTimeout` with all the latest
        records if any has not finished by then."""
        deadline = _calls.deadline_for(timeout)
        tasks: list[Task] = []
        late = False
        for task_id in task_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                tasks.append(self.wait(task_id, left))
            except WaitTimeout as e:
                tasks.append(e.task)
                late = True
        if late:
            raise WaitTimeout(tasks)
        return tasks

    def cancel(self, task_id: str) -> CancelResult:
        """Cancels a task: ``cancelled`` at once, or ``running`` with
        ``cancel_requested`` while its worker stops it. A finished task
        raises :class:`Conflict`."""
        return CancelResult.from_json(self._send(_calls.cancel(task_id)))

    def list_tasks(self, state: str | None = None, *, limit: int | None = None, cursor: str | None = None) -> TaskPage:
        """One page of tasks (optionally in one state); see :class:`TaskPage`."""
        return TaskPage.from_json(self._send(_calls.list_tasks(state, limit, cursor)))

    def iter_tasks(self, state: str | None = None, *, page_size: int = 100) -> Iterator[Task]:
        """Every task (optionally in one state), page after page, each once."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = self.list_tasks(state, limit=page_size, cursor=cursor)
            for t in page.tasks:
                if t.id not in seen:
                    seen.add(t.id)
                    yield t
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def workers(self) -> list[Worker]:
        """Live workers with their handlers, tags, capacity and load."""
        return [Worker.from_json(w) for w in self._send(_calls.workers())["workers"]]
