"""Schemathesis checks for drover's API, loaded by tests/fuzz/schemathesis.sh
through SCHEMATHESIS_HOOKS=drover_checks.

drover_positive_data_acceptance
    Replaces the built-in positive_data_acceptance: a request the OpenAPI
    document calls valid must not be rejected. Its only difference from the
    built-in check: the submit operations may answer 422 for the rules a JSON
    Schema cannot state, and only for those:
      - code `unknown_handler`: which handlers exist depends on the live
        workers, not on the document;
      - `give run_at_ms or delay, not both`;
      - a `timeout` / `delay` that is a well-formed duration but out of range
        (0, more than 7 days / a year, or too many digits);
      - a batch larger than the coordinator's configured max_batch;
      - `unique_for` without `unique_key`, or a well-formed `unique_for`
        out of range.
    and listing (GET /v1/tasks) may answer 400 with the cursor message for
    a cursor not of the form its page takes: a cursor is an opaque string
    in the document, and whether a page takes a scan cursor (digits) or an
    index cursor (`<ms>-<id>`, or digits) depends on `state` and on the
    coordinator's `index_succeeded` setting, which JSON Schema cannot
    state. A cursor of the right form (as a next_cursor is) must be taken.
    Any other rejection of schema-valid data (400 on a valid body, 422 for a
    malformed handler name, ...) means the document is looser than the
    server and fails the run.

flatmap_case hook
    Handler names are random strings in generated submissions, so nearly
    every schema-valid task would stop at 422 unknown_handler and the rest of
    the body would never reach the store, the distributor and the worker. In
    positive mode, each submitted task's handler is replaced, four times in
    five, by one the fuzz worker offers (roles/worker.toml: noop, echo,
    sleep, fail); the body stays schema-valid.

drover_expected_status
    Only active when DROVER_FUZZ_EXPECT_STATUS is set (the auth runs): every
    request that carries DROVER_FUZZ_TOKEN must get that status (403), every
    other request (no token: schemathesis also drops or mangles the header on
    purpose) 401; the JSON error body's `code` must be `forbidden` /
    `unauthorized`, and a 401 must carry `WWW-Authenticate: Bearer`.
    Authentication and scope are checked before anything in the request is
    parsed, so no input may get past them.
"""

from __future__ import annotations

import copy
import json
import os
import re

import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

# Statuses the built-in positive_data_acceptance accepts by default
# (5xx is not_a_server_error's business).
_POSITIVE_OK = {401, 403, 404, 409, 429}
_SUBMIT_OPERATIONS = {("POST", "/v1/tasks"), ("POST", "/v1/tasks/batch")}
# What crate::handlers::parse_duration reads, before range checks.
_DURATION = re.compile(r"^\s*[0-9]+\s*(ms|s|m|h)\s*$")
_BATCH_ITEM = re.compile(r"^tasks\[(\d+)\]: (.*)$", re.S)
# The builtin handlers of roles/worker.toml, which the fuzz worker runs.
_KNOWN_HANDLERS = ("noop", "echo", "sleep", "fail")


def _error(response) -> tuple[str | None, str]:
    try:
        body = json.loads(response.content)
        return body["error"]["code"], body["error"]["message"]
    except Exception:  # not the documented error body: other checks report that
        return None, ""


def _semantic_rejection(case, code: str | None, message: str) -> bool:
    """True when a 422 from a submit operation is one the document cannot express."""
    if code == "unknown_handler":
        return True
    if code != "invalid_task":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    task = body
    m = _BATCH_ITEM.match(message)
    if m:
        tasks = body.get("tasks")
        index, message = int(m.group(1)), m.group(2)
        if not isinstance(tasks, list) or index >= len(tasks) or not isinstance(tasks[index], dict):
            return False
        task = tasks[index]
    elif message.startswith("tasks: 1 to ") and isinstance(body.get("tasks"), list) and body["tasks"]:
        return True  # more than the configured max_batch
    if message == "give run_at_ms or delay, not both":
        return True
    if message == "unique_for: give unique_key with it":
        return True
    for field in ("timeout", "delay", "unique_for"):
        value = task.get(field)
        if message.startswith(f"{field}: ") and isinstance(value, str) and _DURATION.match(value):
            return True  # well-formed, out of range
    return False


@schemathesis.hook
def flatmap_case(context, case):
    if (
        (case.method.upper(), case.operation.path) not in _SUBMIT_OPERATIONS
        or case.meta is None
        or not case.meta.generation.mode.is_positive
        or not isinstance(case.body, dict)
    ):
        return st.just(case)
    original = case.body
    count = _task_count(case.operation.path, original)
    if not count:
        return st.just(case)

    def substitute(choices):
        body = copy.deepcopy(original)
        tasks = [body] if case.operation.path == "/v1/tasks" else body["tasks"]
        targets = [t for t in tasks if isinstance(t, dict) and isinstance(t.get("handler"), str)]
        for task, handler in zip(targets, choices):
            if handler is not None:
                task["handler"] = handler
        case.body = body
        return case

    choice = st.sampled_from((None,) + _KNOWN_HANDLERS)
    return st.lists(choice, min_size=count, max_size=count).map(substitute)


def _task_count(path, body) -> int:
    tasks = [body] if path == "/v1/tasks" else body.get("tasks")
    if not isinstance(tasks, list):
        return 0
    return sum(1 for t in tasks if isinstance(t, dict) and isinstance(t.get("handler"), str))


# What GET /v1/tasks answers for a cursor not of its page's form (src/api/listing.rs).
_CURSOR_HELP = "cursor: use the next_cursor of the previous page"
# The states listed from indexes (src/api/listing.rs); the others are
# scanned. Succeeded tasks are indexed only with limits.index_succeeded
# (DROVER_INDEX_SUCCEEDED), which the fuzz cluster leaves off.
_INDEXED_STATES = {"dead", "cancelled", "scheduled"} | (
    {"succeeded"} if os.environ.get("DROVER_INDEX_SUCCEEDED", "").lower() in ("1", "true", "yes", "on") else set()
)


def _digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and all("0" <= c <= "9" for c in text)


def _cursor_takes(cursor: str, indexed: bool) -> bool:
    """Whether a page takes `cursor`: mirrors PageCursor::parse (src/store/reads.rs)
    for an index page and the scan cursor check (src/api/listing.rs) otherwise."""
    if not indexed:
        return _digits(cursor, 19) and int(cursor) < 2**64
    score, dash, task = cursor.partition("-")
    if not dash:
        return _digits(cursor, 19) and int(cursor) < 2**64
    return _digits(score, 16) and 0 < len(task) <= 36 and all(c.isascii() and (c.isalnum() or c == "-") for c in task)


def _cursor_of_the_wrong_form(case, message: str) -> bool:
    """True when a 400 from the list operation refuses a cursor its page does not take."""
    if (case.method.upper(), case.operation.path) != ("GET", "/v1/tasks") or message != _CURSOR_HELP:
        return False
    query = case.query or {}
    cursor, state = query.get("cursor"), query.get("state")
    return isinstance(cursor, str) and not _cursor_takes(cursor, state in _INDEXED_STATES)


@schemathesis.check
def drover_positive_data_acceptance(ctx, response, case):
    meta = case.meta
    if meta is None or is_unexpected_http_status_case(case):
        return None
    if not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 400 or status in _POSITIVE_OK or status >= 500:
        return None
    code, message = _error(response)
    if status == 422 and (case.method.upper(), case.operation.path) in _SUBMIT_OPERATIONS:
        if _semantic_rejection(case, code, message):
            return None
    if status == 400 and _cursor_of_the_wrong_form(case, message):
        return None
    raise AssertionError(
        f"Schema-valid request rejected with {status} ({code}: {message}).\n"
        "Either the server is wrong or the OpenAPI document allows more than the server does."
    )


@schemathesis.check
def drover_expected_status(ctx, response, case):
    mode = os.environ.get("DROVER_FUZZ_EXPECT_STATUS")
    if not mode:
        return None
    if is_unexpected_http_status_case(case):
        return None  # a method the route lacks gets 405 from the router, before auth
    # The token under test gets `mode`; a request without it (schemathesis
    # also drops or mangles the Authorization header on purpose) gets 401.
    token = os.environ.get("DROVER_FUZZ_TOKEN", "")
    sent = response.request.headers.get("Authorization")
    expected = int(mode) if token and sent == f"Bearer {token}" else 401
    want_code = {401: "unauthorized", 403: "forbidden"}[expected]
    code, _ = _error(response)
    if response.status_code != expected or code != want_code:
        if expected != 401:
            what = "the token under test"
        else:
            what = "no Authorization header" if sent is None else "Authorization without a valid token"
        raise AssertionError(
            f"expected {expected} {want_code} ({os.environ.get('DROVER_FUZZ_AUTH_DESC', '')}; {what}), "
            f"got {response.status_code}: {response.content[:300]!r}"
        )
    if expected == 401:
        challenge = response.headers.get("www-authenticate") or []
        if isinstance(challenge, str):
            challenge = [challenge]
        if not any(c.lower().startswith("bearer") for c in challenge):
            raise AssertionError(f"401 without `WWW-Authenticate: Bearer` (got {challenge!r})")
    return None
