"""Errors as exceptions. Every error the API answers with has the body
``{"error": {"code", "message"}}``; :class:`APIError` carries that code, the
HTTP status and the message, and each stable code has a subclass so callers
can ``except NotFound:``. A code this client does not know yet (a newer
server) still raises :class:`APIError` with the code as sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Task


class DroverError(Exception):
    """Base of every error this package raises."""


class APIError(DroverError):
    """The API answered with an error status."""

    #: The stable code this class stands for (``None`` on the base class).
    code_name: str | None = None

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        #: Seconds from the ``Retry-After`` header (sent with 429 and 503).
        self.retry_after = retry_after


class MalformedRequest(APIError):
    """400: the body or query could not be read (bad JSON, an unknown field, a bad limit or cursor)."""

    code_name = "malformed_request"


class Unauthorized(APIError):
    """401: no bearer token, or one the coordinator does not know."""

    code_name = "unauthorized"


class Forbidden(APIError):
    """403: the token lacks the scope this call needs (submit, read or admin)."""

    code_name = "forbidden"


class NotFound(APIError):
    """404: no such task (unknown, or expired after finishing), or no such route."""

    code_name = "not_found"


class MethodNotAllowed(APIError):
    """405: the route exists but not with this method."""

    code_name = "method_not_allowed"


class Conflict(APIError):
    """409: e.g. cancelling a task that already finished."""

    code_name = "conflict"


class PayloadTooLarge(APIError):
    """413: the request body is over the coordinator's ``max_body``."""

    code_name = "payload_too_large"


class InvalidTask(APIError):
    """422: a field of a submission is out of range or malformed."""

    code_name = "invalid_task"


class UnknownHandler(APIError):
    """422: no worker profile offers the handler."""

    code_name = "unknown_handler"


class BacklogFull(APIError):
    """429: admission control refused the submission; retry after ``retry_after``."""

    code_name = "backlog_full"


class InternalError(APIError):
    """500: the coordinator failed (details are in its log, never in the answer)."""

    code_name = "internal"


class Unavailable(APIError):
    """503: Redis is unreachable or nearly full, or the coordinator is shutting down."""

    code_name = "unavailable"


_BY_CODE: dict[str, type[APIError]] = {
    cls.code_name: cls
    for cls in (
        MalformedRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        InvalidTask,
        UnknownHandler,
        BacklogFull,
        InternalError,
        Unavailable,
    )
    if cls.code_name is not None
}


def api_error(status: int, body: bytes, retry_after: str | None) -> APIError:
    """The exception for an error answer: by its code, or, when the body is
    not drover's error JSON (a proxy's page), the generic class with the code
    ``http_<status>`` and the start of the body as the message."""
    import json

    code = f"http_{status}"
    message = body[:512].decode("utf-8", "replace").strip()
    try:
        parsed: Any = json.loads(body)
        err = parsed["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        pass
    after: float | None = None
    if retry_after is not None:
        try:
            after = float(retry_after)
        except ValueError:
            after = None
    cls = _BY_CODE.get(code, APIError)
    return cls(status, code, message, after)


class TransportError(DroverError):
    """The API could not be reached, or the connection broke, on every try.
    The last ``httpx`` error is the ``__cause__``."""


class WaitTimeout(DroverError):
    """The timeout of :meth:`Client.wait` (or ``wait_many``) passed before every
    task finished. ``tasks`` holds each task's latest record."""

    def __init__(self, tasks: list[Task]) -> None:
        pending = [t.id for t in tasks if not t.terminal]
        super().__init__(f"{len(pending)} of {len(tasks)} tasks not finished: {', '.join(pending[:5])}")
        self.tasks = tasks

    @property
    def task(self) -> Task:
        """The first (for ``wait``, the only) task."""
        return self.tasks[0]
