"""Schemathesis checks of our own, loaded by ``test_fuzz`` as the run's hooks file.

Not a test module (no ``test_`` prefix): schemathesis imports it in its own process.
"""

from __future__ import annotations

from typing import Any

import schemathesis

PROBLEM_JSON = "application/problem+json"


@schemathesis.check
def errors_are_problems(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx names a stable code: problem+json, or OpenRosa XML on ``/openrosa/`` paths.

    A method no OpenRosa route has (405) is refused by the router before any route is chosen,
    so it is a problem+json there too.
    """
    if not 400 <= response.status_code < 500 or case.method.upper() == "HEAD":
        return  # HEAD answers carry no body
    content_type = (response.headers.get("content-type") or [""])[0]
    if case.path.startswith("/openrosa/") and content_type != PROBLEM_JSON:
        assert content_type.startswith("text/xml"), f"{response.status_code} as {content_type}"
        assert b" code=" in response.content, "OpenRosa error without a code"
        return
    assert content_type == PROBLEM_JSON, (
        f"{response.status_code} as {content_type!r}: {response.content[:200]!r}"
    )
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"], f"problem without a code: {body}"
    assert body.get("status") == response.status_code, f"status member differs: {body}"
