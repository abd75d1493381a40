"""What the API answers with, as typed records: :class:`Task`, :class:`Submitted`,
:class:`CancelResult`, :class:`Worker` and :class:`TaskPage`. Each keeps the JSON
it was read from in ``raw``, so a field a newer server adds is readable before
this client names it. States are plain strings; :class:`TaskState` names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    """The states the API reports. Members compare equal to their strings."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SCHEDULED = "scheduled"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED})


def _opt_int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    return None if v is None else int(v)


@dataclass(frozen=True)
class Task:
    """A task's record (the API's ``TaskView``)."""

    id: str
    state: str
    handler: str
    input: Any
    tags: list[str]
    priority: int
    attempts: int
    max_attempts: int
    timeout_ms: int
    #: Rises with every transition.
    version: int
    created_ms: int
    updated_ms: int
    run_at_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    worker: str | None = None
    #: The fencing token of the latest attempt, ``epoch.fence``.
    fence: str | None = None
    #: What the handler returned (any JSON value).
    result: Any = None
    error: str | None = None
    cancel_requested: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True once the task succeeded, died or was cancelled."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Task:
        return cls(
            id=str(d["id"]),
            state=str(d["state"]),
            handler=str(d["handler"]),
            input=d.get("input"),
            tags=list(d.get("tags", [])),
            priority=int(d.get("priority", 0)),
            attempts=int(d.get("attempts", 0)),
            max_attempts=int(d.get("max_attempts", 0)),
            timeout_ms=int(d.get("timeout_ms", 0)),
            version=int(d.get("version", 0)),
            created_ms=int(d.get("created_ms", 0)),
            updated_ms=int(d.get("updated_ms", 0)),
            run_at_ms=_opt_int(d, "run_at_ms"),
            started_ms=_opt_int(d, "started_ms"),
            finished_ms=_opt_int(d, "finished_ms"),
            worker=d.get("worker"),
            fence=d.get("fence"),
            result=d.get("result"),
            error=d.get("error"),
            cancel_requested=bool(d.get("cancel_requested", False)),
            raw=d,
        )


@dataclass(frozen=True)
class Submitted:
    """The receipt of one submission."""

    id: str
    state: str
    #: True when an earlier submission with the same idempotency key stands
    #: (``id`` is then that task's).
    duplicate: bool
    #: The idempotency key the submission was sent with (given, or generated).
    idempotency_key: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any], key: str) -> Submitted:
        return cls(id=str(d["id"]), state=str(d["state"]), duplicate=bool(d.get("duplicate", False)),
                   idempotency_key=key, raw=d)


@dataclass(frozen=True)
class CancelResult:
    """``cancelled`` at once, or ``running`` with ``cancel_requested`` while its worker stops it."""

    id: str
    state: str
    cancel_requested: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CancelResult:
        return cls(id=str(d["id"]), state=str(d["state"]),
                   cancel_requested=bool(d.get("cancel_requested", False)), raw=d)


@dataclass(frozen=True)
class Worker:
    """A live worker as its heartbeats describe it."""

    id: str
    handlers: list[str]
    tags: list[str]
    capacity: int
    #: Slots held by tasks assigned or running.
    used: int
    in_flight: int
    draining: bool
    last_heartbeat_ms: int
    version: str
    #: The queues it takes tasks from, as ``<queue>:<weight>``; empty: every queue.
    queues: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Worker:
        return cls(
            id=str(d["id"]),
            handlers=list(d.get("handlers", [])),
            tags=list(d.get("tags", [])),
            capacity=int(d.get("capacity", 0)),
            used=int(d.get("used", 0)),
            in_flight=int(d.get("in_flight", 0)),
            draining=bool(d.get("draining", False)),
            last_heartbeat_ms=int(d.get("last_heartbeat_ms", 0)),
            version=str(d.get("version", "")),
            queues=list(d.get("queues", [])),
            raw=d,
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of ``list_tasks``. Pass ``next_cursor`` back for the next page;
    it is ``None`` on the last. Pages follow a Redis SCAN: their sizes vary
    (a page may hold fewer tasks than the limit, or none, before the last),
    and a task may appear on two pages."""

    tasks: list[Task]
    next_cursor: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskPage:
        return cls(tasks=[Task.from_json(t) for t in d.get("tasks", [])], next_cursor=d.get("next_cursor"))
