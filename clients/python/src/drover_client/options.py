"""Submission bodies: turning ``handler, input, **options`` into the JSON the
API takes. Options pass through under their API names (see
``SubmitRequest`` in the server's ``src/api/requests.rs``), so a field the
server learns later is usable at once by its name; the table
:data:`CONVERTERS` only says how friendlier Python values (``timedelta`` or
seconds for durations, ``datetime`` for times) become the API's, and
``None`` means "not given". The server refuses unknown fields (400), so a
misspelt option is an error, not a silent no-op."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: Today's submit options, by their API name (besides ``handler`` and ``input``).
KNOWN_OPTIONS = ("tags", "priority", "max_attempts", "timeout", "run_at_ms", "delay", "idempotency_key")


def duration(value: str | int | float | timedelta) -> str:
    """A duration in the API's grammar (digits and ms, s, m or h): a string
    is taken as written, a number is seconds, a ``timedelta`` is itself."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("a duration is a string, seconds or a timedelta, not a bool")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return f"{round(seconds * 1000)}ms"


def unix_ms(value: int | datetime) -> int:
    """Unix milliseconds: an int as given, an aware ``datetime`` converted
    (a naive one is refused rather than guessed)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("run_at_ms: give an aware datetime (with tzinfo), or unix ms")
        return round(value.timestamp() * 1000)
    return int(value)


#: How an option's Python value becomes its JSON value; others pass as they are.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "timeout": duration,
    "delay": duration,
    "run_at_ms": unix_ms,
    "tags": list,
}


def new_idempotency_key() -> str:
    """A fresh key for a submission the caller gave none: a retry of the same
    call reuses it, so the server returns the first task instead of a second."""
    return f"py-{uuid.uuid4().hex}"


def task_body(handler: str, input: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of one submission; every body gets an idempotency key."""
    body: dict[str, Any] = {"handler": handler, "input": input}
    for name, value in options.items():
        if value is None:
            continue
        if name in ("handler", "input"):
            raise TypeError(f"{name} is given positionally, not as an option")
        convert = CONVERTERS.get(name)
        body[name] = convert(value) if convert else value
    if not body.get("idempotency_key"):
        body["idempotency_key"] = new_idempotency_key()
    return body


@dataclass(frozen=True)
class TaskSpec:
    """One task of a batch: ``task("echo", {"n": 1}, priority=5)`` builds one."""

    handler: str
    input: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return task_body(self.handler, self.input, self.options)


def task(
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
) -> TaskSpec:
    """A task for ``submit_batch``, with the same options as ``submit``."""
    options: dict[str, Any] = dict(
        tags=tags, priority=priority, max_attempts=max_attempts, timeout=timeout,
        run_at_ms=run_at_ms, delay=delay, idempotency_key=idempotency_key,
    )
    options.update(extra)
    return TaskSpec(handler, input, options)


def batch_item(item: TaskSpec | Mapping[str, Any]) -> dict[str, Any]:
    """A batch entry: a :class:`TaskSpec`, or a mapping with ``handler``,
    optional ``input`` and options by their API names."""
    if isinstance(item, TaskSpec):
        return item.body()
    rest = dict(item)
    try:
        handler = rest.pop("handler")
    except KeyError:
        raise TypeError("a batch item needs a handler") from None
    return task_body(str(handler), rest.pop("input", None), rest)
