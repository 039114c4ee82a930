"""What any answer of an ``/api/v2`` route must be (API-V2.md §3, §6): a status the contract documents for that
route, never a 500 (nor FastAPI's ``{"detail": …}``), an error in the v2 envelope with a known code and that
code's status (Retry-After in whole seconds where the code carries one), and a Job the SDK's own pydantic models
read where a route answers one. ``v2_problems`` lists what is wrong with one answer (empty: nothing)."""
from __future__ import annotations

import json
from typing import Any

from comfy_low.models import ErrorEnvelope, Job, JobWorkflowResponse
from pydantic import ValidationError

from comfyart.api.v2.errors import ERROR_STATUS, RETRY_AFTER_CODES

# (method, OpenAPI path) -> the statuses API-V2.md documents for it (401/403: auth; 429: a rate; 503: no backend)
DOCUMENTED: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/api/v2/jobs"): frozenset({201, 400, 401, 402, 403, 413, 415, 422, 429, 503}),
    ("GET", "/api/v2/jobs/{task_id}"): frozenset({200, 401, 403, 404, 422, 429}),
    ("GET", "/api/v2/jobs/{task_id}/workflow"): frozenset({200, 401, 403, 404, 422, 429}),
    ("POST", "/api/v2/jobs/{task_id}/cancel"): frozenset({200, 401, 403, 404, 422, 429}),
    ("GET", "/api/v2/jobs"): frozenset({200, 400, 401, 403, 422, 429}),
    ("GET", "/api/v2/jobs/{task_id}/events"): frozenset({200, 401, 403, 404, 422, 429}),
    ("GET", "/api/v2/health"): frozenset({200}),
    ("POST", "/api/v2/assets"): frozenset({200, 201, 400, 401, 403, 409, 413, 415, 422, 429}),
    ("POST", "/api/v2/assets/from-hash"): frozenset({200, 201, 400, 401, 403, 404, 413, 415, 422, 429}),
    ("HEAD", "/api/v2/assets/by-hash/{blob_hash}"): frozenset({200, 401, 403, 404, 422, 429}),
    ("GET", "/api/v2/assets/{asset_id}"): frozenset({200, 401, 403, 404, 422, 429}),
    ("DELETE", "/api/v2/assets/{asset_id}"): frozenset({204, 401, 403, 404, 422, 429}),
    ("GET", "/api/v2/assets/{asset_id}/content"): frozenset({200, 206, 302, 401, 403, 404, 416, 422, 429}),
}
# a route the table does not name: any status some v2 route documents
ANY_V2 = frozenset({200, 201, 204, 206, 302, 400, 401, 402, 403, 404, 409, 413, 415, 416, 422, 429, 501, 503})
# invalid_request is 400 for a malformed request and 422 for a bad field (§3); a bad Range is 416, a big body 413,
# a method the route does not take 405, a body that is not JSON by its content-type 415 (comfyart's own answer: the
# contract says 400 for a body that is not JSON, which the SDK, sending JSON always, never meets)
INVALID_REQUEST_STATUSES = frozenset({400, 405, 413, 415, 416, 422})
# the answers that are a Job (§5)
JOB_ANSWERS = {("POST", "/api/v2/jobs"), ("GET", "/api/v2/jobs/{task_id}"),
               ("POST", "/api/v2/jobs/{task_id}/cancel")}


def v2_problems(method: str, path: str, status: int, headers: dict[str, str], text: str) -> list[str]:
    """What is wrong with the answer ``status``/``headers``/``text`` to ``method`` on the OpenAPI ``path``."""
    allowed = documented(method, path)
    problems = [] if status in allowed else [f"status {status} not documented for {method} {path}"]
    if method == "HEAD":  # no body to read
        return problems
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
        if status >= 400 or "json" in headers.get("content-type", ""):
            return [*problems, "the answer is not JSON"]
    if status >= 400:
        return problems + _error_problems(status, headers, body)
    if status < 300 and body is not None:
        problems += _body_problems(method, path, body)
    return problems


def documented(method: str, path: str) -> frozenset[int]:
    """The statuses ``method`` on ``path`` may answer: a method the route does not take is 405."""
    if (method, path) in DOCUMENTED:
        return DOCUMENTED[(method, path)]
    return frozenset({405}) if any(known == path for _, known in DOCUMENTED) else ANY_V2 | {405}


def plain_headers(headers: Any) -> dict[str, str]:
    """Any client's headers as lower-case names to one value (schemathesis gives each name a list)."""
    return {str(name).lower(): ", ".join(value) if isinstance(value, list) else str(value)
            for name, value in headers.items()}


def _error_problems(status: int, headers: dict[str, str], body: Any) -> list[str]:
    if not isinstance(body, dict) or set(body) != {"error"}:
        return [f"not the v2 envelope: {str(body)[:200]}"]
    try:
        ErrorEnvelope.model_validate(body)
    except ValidationError as invalid:
        return [f"the SDK cannot read the envelope: {invalid.errors()[0]['msg']}"]
    code = body["error"]["code"]
    if code not in ERROR_STATUS:
        return [f"unknown error code {code!r}"]
    wanted = INVALID_REQUEST_STATUSES if code == "invalid_request" else {ERROR_STATUS[code]}
    problems = [] if status in wanted else [f"{code} answered {status}, not {sorted(wanted)}"]
    if code in RETRY_AFTER_CODES and not headers.get("retry-after", "").isdigit():
        problems.append(f"{code} without Retry-After in whole seconds")
    if "Traceback" in json.dumps(body):
        problems.append("a stack trace in the answer")
    return problems


def _body_problems(method: str, path: str, body: Any) -> list[str]:
    model: Any = Job if (method, path) in JOB_ANSWERS else JobWorkflowResponse if path.endswith("/workflow") else None
    if model is None:
        return []
    try:
        model.model_validate(body)
    except ValidationError as invalid:
        return [f"the SDK cannot read the {model.__name__}: {invalid.errors()[0]}"]
    return []
