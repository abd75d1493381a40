"""For Python services behind a drover ``http`` handler.

drover's worker POSTs the task's input as JSON to the URL of the profile,
with ``X-Drover-Task-Id``, ``X-Drover-Attempt`` and ``X-Drover-Fence``
(``epoch.fence``: the token of the lease the attempt runs under). A 2xx
answer's body is the task's result (JSON; empty is ``null``, other text
becomes a string); any other status fails the attempt, with the status and
the start of the body as the task's error, and the task is retried while it
has attempts left.

A worker that lost its lease may still be sending: its token is lower than
the newer attempt's, compared as the pair (epoch, fence). A sink that keeps
the highest token per task and refuses lower ones is safe against it
(:class:`Fences` does that in memory; a service with a database keeps the
same pair next to the effect it guards). Tasks assigned together share a
token, so the token is kept per task id.

:func:`handle` is the framework-free core (headers and body in, a
:class:`Reply` out); :func:`wsgi_app` and :func:`asgi_app` wrap it for any
WSGI or ASGI server."""

from __future__ import annotations

import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TASK_ID_HEADER = "x-drover-task-id"
ATTEMPT_HEADER = "x-drover-attempt"
FENCE_HEADER = "x-drover-fence"


@dataclass(frozen=True, order=True)
class Fence:
    """A lease's fencing token; tokens order as the pair (epoch, fence)."""

    epoch: int
    fence: int

    @classmethod
    def parse(cls, text: str) -> Fence:
        epoch, dot, fence = text.strip().partition(".")
        if not dot or not epoch.isdigit() or not fence.isdigit():
            raise ValueError(f"fence {text!r} is not EPOCH.FENCE")
        return cls(int(epoch), int(fence))

    def __str__(self) -> str:
        return f"{self.epoch}.{self.fence}"


@dataclass(frozen=True)
class TaskRequest:
    """One attempt of a task, as drover's http handler sent it."""

    task_id: str
    #: 1 for the first attempt, rising with each retry.
    attempt: int
    fence: Fence
    #: The task's input (any JSON value).
    input: Any
    #: Every request header, names in lower case.
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class BadTaskRequest(ValueError):
    """The request lacks drover's headers or its body is not JSON (answered 400)."""


class Fail(Exception):
    """Raise from a task function to fail the attempt with this message
    (and status, 500 unless given); drover records ``HTTP <status>: <message>``."""

    def __init__(self, message: str, status: int = 500) -> None:
        if status < 300:
            raise ValueError("a failure needs a status outside 2xx")
        super().__init__(message)
        self.message = message
        self.status = status


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def parse_request(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes) -> TaskRequest:
    """Reads drover's headers and the JSON body; raises :class:`BadTaskRequest`."""
    h = _lower(headers)
    task_id = h.get(TASK_ID_HEADER, "").strip()
    if not task_id:
        raise BadTaskRequest(f"missing {TASK_ID_HEADER} header: not a request from drover")
    try:
        attempt = int(h.get(ATTEMPT_HEADER, ""))
        fence = Fence.parse(h.get(FENCE_HEADER, ""))
    except ValueError as e:
        raise BadTaskRequest(f"bad {ATTEMPT_HEADER} or {FENCE_HEADER} header: {e}") from None
    try:
        value = json.loads(body) if body.strip() else None
    except ValueError as e:
        raise BadTaskRequest(f"body is not JSON: {e}") from None
    return TaskRequest(task_id=task_id, attempt=attempt, fence=fence, input=value, headers=h)


class Fences:
    """The highest fencing token seen per task, in this process's memory
    (thread-safe; the oldest entries beyond ``max_tasks`` are forgotten)."""

    def __init__(self, max_tasks: int = 100_000) -> None:
        self._seen: OrderedDict[str, Fence] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_tasks

    def admit(self, task_id: str, fence: Fence) -> bool:
        """True, and remembered, unless a higher token was seen for this task."""
        with self._lock:
            seen = self._seen.get(task_id)
            if seen is not None and fence < seen:
                return False
            self._seen[task_id] = fence
            self._seen.move_to_end(task_id)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True

    def highest(self, task_id: str) -> Fence | None:
        with self._lock:
            return self._seen.get(task_id)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer for drover: status, headers and body."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]

    @classmethod
    def result(cls, value: Any) -> Reply:
        """200 with the task's result as JSON."""
        return cls(200, json.dumps(value).encode(), [("Content-Type", "application/json")])

    @classmethod
    def failure(cls, message: str, status: int = 500) -> Reply:
        """A failed attempt; the message becomes the task's error."""
        return cls(status, message.encode(), [("Content-Type", "text/plain; charset=utf-8")])

    @classmethod
    def stale(cls, request: TaskRequest, highest: Fence | None) -> Reply:
        """409 for an attempt whose lease a newer attempt superseded."""
        return cls.failure(f"stale fence {request.fence} for task {request.task_id} (seen {highest})", 409)


TaskFn = Callable[[TaskRequest], Any]
AsyncTaskFn = Callable[[TaskRequest], Awaitable[Any]]


def _check(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes,
           fences: Fences | None) -> TaskRequest | Reply:
    try:
        req = parse_request(headers, body)
    except BadTaskRequest as e:
        return Reply.failure(str(e), 400)
    if fences is not None and not fences.admit(req.task_id, req.fence):
        return Reply.stale(req, fences.highest(req.task_id))
    return req


def _failed(e: Exception) -> Reply:
    if isinstance(e, Fail):
        return Reply.failure(e.message, e.status)
    return Reply.failure(f"{type(e).__name__}: {e}", 500)


def handle(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes, fn: TaskFn,
           fences: Fences | None = None) -> Reply:
    """Parses the request, refuses a stale fence (when ``fences`` is given),
    runs ``fn`` and answers with its return value as the result; an exception
    fails the attempt (:class:`Fail` chooses the message and status)."""
    checked = _check(headers, body, fences)
    if isinstance(checked, Reply):
        return checked
    try:
        return Reply.result(fn(checked))
    except Exception as e:  # noqa: BLE001 - any error of the task fails the attempt
        return _failed(e)


async def handle_async(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes,
                       fn: TaskFn | AsyncTaskFn, fences: Fences | None = None) -> Reply:
    """As :func:`handle`, for a sync or ``async`` task function."""
    checked = _check(headers, body, fences)
    if isinstance(checked, Reply):
        return checked
    try:
        out = fn(checked)
        if inspect.isawaitable(out):
            out = await out
        return Reply.result(out)
    except Exception as e:  # noqa: BLE001
        return _failed(e)


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error"}


def wsgi_app(fn: TaskFn, fences: Fences | None = None) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """A WSGI application running ``fn`` for each POST."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            reply = Reply.failure("drover sends POST", 405)
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
            # WSGI keeps these two out of the HTTP_ variables.
            headers += [(k.replace("_", "-"), environ[k]) for k in ("CONTENT_TYPE", "CONTENT_LENGTH") if environ.get(k)]
            reply = handle(headers, body, fn, fences)
        status = f"{reply.status} {_REASONS.get(reply.status, 'Error')}"
        start_response(status, [*reply.headers, ("Content-Length", str(len(reply.body)))])
        return [reply.body]

    return app


def asgi_app(fn: TaskFn | AsyncTaskFn, fences: Fences | None = None) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """An ASGI (3.0) application running ``fn`` (sync or async) for each POST."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope.get("method") != "POST":
            reply = Reply.failure("drover sends POST", 405)
        else:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
            reply = await handle_async(headers, body, fn, fences)
        raw = [(k.lower().encode(), v.encode()) for k, v in reply.headers]
        raw.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        await send({"type": "http.response.body", "body": reply.body})

    return app
