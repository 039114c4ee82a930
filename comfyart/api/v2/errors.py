"""The v2 error envelope, ``{"error": {"code", "message", "details"}}``, and the HTTP status of every code the
contract names (API-V2.md §3, §6.7). Pure."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# code -> its HTTP status. ``invalid_request`` is 400 for a malformed request (body not JSON, bad Idempotency-Key,
# bad extra_data, bad limit); the proxy answers 422 for a bad ``metadata``/``priority``/multipart part, so a route
# may pass 422 there. Statuses the contract leaves open (the list's filter and cursor errors) are 400: a bad query.
ERROR_STATUS: dict[str, int] = {
    # core (SPEC)
    "invalid_workflow": 422,
    "workflow_format_ui": 422,
    "missing_asset": 422,
    "hash_mismatch": 409,
    "blob_not_found": 404,
    "idempotency_key_reuse": 422,
    "queue_full": 429,
    "insufficient_credits": 402,
    "not_found": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "upstream_error": 500,
    "too_many_streams": 429,
    "not_implemented": 501,
    "asset_in_use": 409,
    # deployment surfaces
    "deployment_not_ready": 429,
    "deployment_stopped": 422,
    # the proxy's own
    "invalid_request": 400,
    "upstream_unreachable": 503,
    "payload_too_large": 413,
    "output_unavailable": 404,
    # the job list (SDK list_jobs)
    "invalid_metadata_filter": 400,
    "invalid_cursor": 400,
    "metadata_invalid": 422,
    "metadata_not_supported": 422,
    "public_deployment_no_list": 403,
}

# codes whose answer carries Retry-After (integer seconds: the SDK reads nothing else)
RETRY_AFTER_CODES = frozenset({"queue_full", "rate_limited", "too_many_streams", "deployment_not_ready"})


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The envelope of one error: ``code`` one of ERROR_STATUS (KeyError otherwise: a typo must not reach a
    client), ``message`` one line for a person, ``details`` an object or None (e.g. ``{"node_errors": …}``)."""
    if code not in ERROR_STATUS:
        raise KeyError(f"unknown v2 error code {code!r}")
    return {"error": {"code": code, "message": message, "details": dict(details) if details is not None else None}}


def status_of(code: str) -> int:
    """The HTTP status ``code`` answers with."""
    return ERROR_STATUS[code]


V2_PREFIX = "/api/v2"


def is_v2(path: str) -> bool:
    """Whether ``path`` is one of the v2 API's: its answers, refusals included, are in the v2 envelope."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")
