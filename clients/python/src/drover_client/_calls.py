"""What each client call sends and how its answer is read, shared by the
sync and asyncio clients so they differ only in how they wait: a
:class:`Call` per API route, :func:`decode` for answers, and the retry
decisions (:func:`retry_after_error`, :func:`retry_after_answer`) that both
clients' send loops ask."""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from .errors import TransportError, api_error
from .retry import RetryPolicy, retryable_error

#: Longest single long-poll asked of ``/wait``; the coordinator caps it by its
#: ``wait_max`` (60s by default) anyway, and a longer wait is several polls.
MAX_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Safe to repeat after the request may have reached the server.
    idempotent: bool = True
    #: Extra seconds of read timeout (a long-poll's own length).
    extra_timeout: float = 0.0


def task_path(task_id: str, tail: str = "") -> str:
    if not task_id:
        raise ValueError("a task id is required")
    return f"/v1/tasks/{quote(task_id, safe='')}{tail}"


def submit(body: dict[str, Any]) -> Call:
    """One task; its idempotency key goes in the header (which wins over the body)."""
    body = dict(body)
    key = str(body.pop("idempotency_key"))
    return Call("POST", "/v1/tasks", json=body, headers={"Idempotency-Key": key})


def submit_batch(bodies: list[dict[str, Any]]) -> Call:
    return Call("POST", "/v1/tasks/batch", json={"tasks": bodies})


def get(task_id: str) -> Call:
    return Call("GET", task_path(task_id))


def wait(task_id: str, poll_seconds: float) -> Call:
    ms = max(0, round(poll_seconds * 1000))
    return Call("GET", task_path(task_id, "/wait"), params={"timeout": f"{ms}ms"}, extra_timeout=poll_seconds)


def cancel(task_id: str) -> Call:
    # A cancel that reached the server and is repeated answers 409 (already
    # finished): only a request that never left is retried.
    return Call("POST", task_path(task_id, "/cancel"), idempotent=False)


def list_tasks(state: str | None, limit: int | None, cursor: str | None) -> Call:
    params: dict[str, str] = {}
    if state is not None:
        params["state"] = str(state)
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/tasks", params=params)


def workers() -> Call:
    return Call("GET", "/v1/workers")


def poll_for(deadline: float | None) -> float:
    """The length of the next long-poll: what is left of the wait, at most
    :data:`MAX_POLL_SECONDS`."""
    if deadline is None:
        return MAX_POLL_SECONDS
    return max(0.0, min(MAX_POLL_SECONDS, deadline - time.monotonic()))


def deadline_for(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def decode(resp: httpx.Response) -> Any:
    """The JSON of a 2xx answer; any other status raises its :class:`APIError`."""
    if resp.is_success:
        return resp.json()
    raise api_error(resp.status_code, resp.content, resp.headers.get("retry-after"))


def retry_after_error(policy: RetryPolicy, attempt: int, exc: httpx.TransportError, call: Call) -> float:
    """Seconds to sleep before trying ``call`` again after a transport error;
    raises :class:`TransportError` when it is not to be tried again."""
    if attempt < policy.attempts and retryable_error(exc, call.idempotent):
        return policy.delay(attempt)
    raise TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc


def retry_after_answer(policy: RetryPolicy, attempt: int, resp: httpx.Response, call: Call) -> float | None:
    """Seconds to sleep before trying again after this answer, or ``None``
    to take it as it is."""
    if resp.status_code in policy.retry_statuses and call.idempotent and attempt < policy.attempts:
        after = resp.headers.get("retry-after")
        try:
            seconds = float(after) if after is not None else None
        except ValueError:
            seconds = None
        return policy.delay(attempt, seconds)
    return None


#: A file path, as ``ca_file``, ``client_cert`` and ``client_key`` take it.
FilePath = str | os.PathLike[str]


def tls_verify(ca_file: FilePath | None, client_cert: FilePath | None, client_key: FilePath | None) -> ssl.SSLContext | bool:
    """What the clients pass as httpx's ``verify``: ``True`` (httpx's own
    roots) when no TLS option is given, else an SSL context that trusts only
    ``ca_file`` (the system's roots without one), as the CLI's
    ``--ca-file`` does, and presents ``client_cert`` (with ``client_key``,
    unless the key is in the same file)."""
    if ca_file is None and client_cert is None and client_key is None:
        return True
    if client_key is not None and client_cert is None:
        raise ValueError("client_key needs its client_cert")
    ctx = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    if client_cert is not None:
        ctx.load_cert_chain(os.fspath(client_cert), os.fspath(client_key) if client_key is not None else None)
    return ctx


def tls_from_env() -> dict[str, str]:
    """The TLS options the CLI reads from the environment, those set."""
    names = {"ca_file": "DROVER_API_CA_FILE", "client_cert": "DROVER_API_CLIENT_CERT", "client_key": "DROVER_API_CLIENT_KEY"}
    return {arg: os.environ[var] for arg, var in names.items() if os.environ.get(var)}


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
