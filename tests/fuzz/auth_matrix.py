#!/usr/bin/env python3
"""Token and scope matrix for every operation of drover's OpenAPI document.

Usage: auth_matrix.py API_BASE ADMIN_TOKEN READ_TOKEN SUBMIT_TOKEN

Reads /v1/openapi.json from the server (so a new operation is covered as
soon as it is documented) and checks, with the standard library only:
  - the document itself is served without a token;
  - every operation declares the bearer scheme and documents 401 and 403;
  - no token, an unknown token, a non-Bearer scheme -> 401 `unauthorized`
    with `WWW-Authenticate: Bearer`;
  - a read-only token on a POST operation -> 403 `forbidden`, and a
    submit-only token on a GET operation -> 403 `forbidden`; an operation
    whose security names the `admin` scope (an operator's action) -> 403
    for both;
  - the token with the right scope is not refused (no 401/403), so the
    refusals above are about scope, not a broken token;
  - an {id} that is not UTF-8 (%FF) still gets 401 without a token, and a
    documented status with the JSON error body with one.
Requests carry well-formed ids and bodies, so a missing check would let the
request through rather than fail on validation. Exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid

READ_METHODS = {"get", "head"}


def call(base: str, method: str, path: str, headers: dict[str, str], body: bytes | None):
    req = urllib.request.Request(base + path, data=body, method=method.upper(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def error_code(raw: bytes) -> str | None:
    try:
        return json.loads(raw)["error"]["code"]
    except Exception:
        return None


def main() -> int:
    base, admin, reader, submitter = sys.argv[1:5]
    base = base.rstrip("/")
    failures: list[str] = []
    passed = 0

    status, _, raw = call(base, "get", "/v1/openapi.json", {}, None)
    if status != 200:
        print(f"FAIL GET /v1/openapi.json without a token: {status}")
        return 1
    doc = json.loads(raw)
    passed += 1

    bodies = {
        "/v1/tasks": {"handler": "noop", "input": {"from": "auth_matrix"}},
        "/v1/tasks/batch": {"tasks": [{"handler": "noop"}]},
    }
    operations = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                continue
            operations.append((method, path, op))
            declared = {s for req in op.get("security", []) for s in req}
            if "bearer" not in declared:
                failures.append(f"{method.upper()} {path}: document declares no bearer security")
            for code in ("401", "403"):
                if code not in op.get("responses", {}):
                    failures.append(f"{method.upper()} {path}: document lists no {code} response")

    for method, path, op in operations:
        # A well-formed id that exists nowhere: validation would pass.
        concrete = path.replace("{id}", str(uuid.uuid4()))
        body = bodies.get(path, {}) if method == "post" else None
        data = json.dumps(body).encode() if body is not None else None
        base_headers = {"Content-Type": "application/json"} if data is not None else {}
        label = f"{method.upper()} {path}"

        def expect(desc: str, headers: dict[str, str], want: int | None):
            nonlocal passed
            st, hdrs, raw = call(base, method, concrete, {**base_headers, **headers}, data)
            code = error_code(raw)
            if want is None:
                ok = st not in (401, 403) and st < 500
                what = "neither 401/403 nor 5xx"
            else:
                ok = st == want and code == {401: "unauthorized", 403: "forbidden"}[want]
                what = f"{want}"
                if ok and want == 401:
                    challenge = {k.lower(): v for k, v in hdrs.items()}.get("www-authenticate", "")
                    ok = challenge.lower().startswith("bearer")
                    what += " with WWW-Authenticate: Bearer"
            if ok:
                passed += 1
            else:
                failures.append(f"{label} {desc}: expected {what}, got {st} {raw[:200]!r}")

        expect("without a token", {}, 401)
        expect("with an unknown token", {"Authorization": "Bearer drv_" + "0" * 48}, 401)
        expect("with an empty bearer token", {"Authorization": "Bearer "}, 401)
        expect("with Basic auth", {"Authorization": "Basic YWRtaW46YWRtaW4="}, 401)
        scopes = {sc for req in op.get("security", []) for sc in req.get("bearer", [])}
        if "admin" in scopes:
            # An operator's action: only the admin token passes.
            expect("with a read-only token", {"Authorization": f"Bearer {reader}"}, 403)
            expect("with a submit token", {"Authorization": f"Bearer {submitter}"}, 403)
        elif method in READ_METHODS:
            expect("with a submit-only token", {"Authorization": f"Bearer {submitter}"}, 403)
            expect("with a read token", {"Authorization": f"Bearer {reader}"}, None)
        else:
            expect("with a read-only token", {"Authorization": f"Bearer {reader}"}, 403)
            expect("with a submit token", {"Authorization": f"Bearer {submitter}"}, None)
        expect("with the admin token", {"Authorization": f"Bearer {admin}"}, None)

        if "{id}" in path:
            # An id that is not UTF-8 once percent-decoded: the token must
            # still be checked first, and the answer must be a documented
            # status with the JSON error body, not the router's plain text.
            bad = path.replace("{id}", "%FF")
            st, _, raw = call(base, method, bad, base_headers, data)
            if st == 401 and error_code(raw) == "unauthorized":
                passed += 1
            else:
                failures.append(f"{label} with id %FF without a token: expected 401, got {st} {raw[:120]!r}")
            st, _, raw = call(base, method, bad, {**base_headers, "Authorization": f"Bearer {admin}"}, data)
            documented = set(doc["paths"][path][method].get("responses", {}))
            if str(st) in documented and st < 500 and error_code(raw):
                passed += 1
            else:
                failures.append(
                    f"{label} with id %FF and the admin token: expected a documented 4xx "
                    f"({', '.join(sorted(documented))}) with the JSON error body, got {st} {raw[:120]!r}"
                )

    for f in failures:
        print(f"FAIL {f}")
    print(f"auth matrix: {len(operations)} operations, {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
