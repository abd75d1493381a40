"""A client for drover's HTTP API, sync (:class:`Client`) and asyncio
(:class:`AsyncClient`), and in ``drover_client.handler`` a helper for
services behind drover's ``http`` handler."""

from .aio import AsyncClient
from .client import Client
from .errors import (
    APIError,
    BacklogFull,
    Conflict,
    DroverError,
    Forbidden,
    InternalError,
    InvalidTask,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TransportError,
    Unauthorized,
    Unavailable,
    UnknownHandler,
    WaitTimeout,
)
from .options import TaskSpec, task
from .retry import RetryPolicy
from .types import TERMINAL_STATES, CancelResult, Submitted, Task, TaskPage, TaskState, Worker

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "BacklogFull",
    "CancelResult",
    "Client",
    "Conflict",
    "DroverError",
    "Forbidden",
    "InternalError",
    "InvalidTask",
    "MalformedRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RetryPolicy",
    "Submitted",
    "TERMINAL_STATES",
    "Task",
    "TaskPage",
    "TaskSpec",
    "TaskState",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnknownHandler",
    "WaitTimeout",
    "Worker",
    "task",
]
