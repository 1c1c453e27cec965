"""Domain errors (oonibackend.errors) answered by the HTTP layer in the one error format."""

from __future__ import annotations

import json

import pytest

from oonibackend import errors


@pytest.mark.parametrize("exc,status", [
    (errors.Invalid("Invalid x", err_str="err_request_params"), 400),
    (errors.Unauthenticated("Authentication required"), 401),
    (errors.Forbidden("Role not authorized"), 403),
    (errors.Failed("Cannot save the change"), 500),
    (errors.UpstreamFailed("Cannot push"), 502),
    (errors.Unavailable("Busy", retry_after=2, err_str="err_busy"), 503),
])
def test_domain_errors_map_to_statuses_and_the_one_format(exc, status):
    resp = errors.error_response(None, exc)  # type: ignore[arg-type]
    assert resp.status == status == errors.domain_status(exc)
    assert json.loads(resp.body) == {"error": exc.message, **exc.extra}
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers.get("Retry-After") == ("2" if status == 503 else None)


def test_unavailable_without_retry_after_has_no_header():
    resp = errors.error_response(None, errors.Unavailable("Unable to send the email",  # type: ignore[arg-type]
                                                          detail="x"))
    assert resp.status == 503 and "Retry-After" not in resp.headers
