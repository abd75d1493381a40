"""When a call is tried again. Connection failures are retried for every
call whose repeat is harmless: reads, and submissions (which always carry an
idempotency key, so a repeat returns the first task rather than making a
second). ``cancel`` is repeated only when the request cannot have reached
the server (the connection was never made). Answers in ``retry_statuses``
(by default 503, which the coordinator sends while Redis is unreachable or
it is shutting down) are retried after their ``Retry-After``, capped by
``max_backoff``."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class RetryPolicy:
    #: Tries in all, the first included (1 turns retries off).
    attempts: int = 4
    #: Delay before the first retry, in seconds; doubles after each.
    backoff: float = 0.2
    max_backoff: float = 5.0
    retry_statuses: frozenset[int] = frozenset({503})

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based), with jitter."""
        base: float = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_backoff))
        return base * (0.5 + random.random() / 2)


#: Never sent: repeating cannot do anything twice.
NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def retryable_error(exc: Exception, idempotent: bool) -> bool:
    """Whether a transport error may be retried for a call of this kind."""
    if isinstance(exc, NOT_SENT):
        return True
    return idempotent and isinstance(exc, httpx.TransportError)
