"""Errors on ``/api/v2`` paths as the v2 envelope (``api.v2.errors``), never FastAPI's ``{"detail": …}``: the
app's handlers (``api.errors``) hand every error of a v2 path here. A route refuses with ``V2Refused``; comfyart's
own errors (a task not found, a quota, a graph the fleet refuses…) map to the v2 code that says the same."""
from __future__ import annotations

import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from comfyart.api.auth import Unauthenticated
from comfyart.api.limits import BodyTooLarge
from comfyart.api.v2.errors import RETRY_AFTER_CODES, error_body, status_of
from comfyart.comfy.inventory import NotInFleet
from comfyart.comfy.validate import GraphRefused
from comfyart.errors import Fenced, Forbidden, NotFound, QuotaExceeded, TransientError


class V2Refused(Exception):
    """A v2 route's refusal: its code, one line, details, and the status when not the code's own."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details
        self.status = status if status is not None else status_of(code)



def _retry_after(exc: Exception) -> str:
    seconds = getattr(exc, "retry_after_s", 1.0)
    return str(max(1, round(seconds if isinstance(seconds, (int, float)) else 1.0)))


def refusal_of(exc: Exception) -> V2Refused:
    """The v2 refusal an error of a v2 route stands for; an error of no known kind is a 400 ``invalid_request``
    with its one line (comfyart's errors carry one already), or of its own status when it has one."""
    if isinstance(exc, V2Refused):
        return exc
    if isinstance(exc, QuotaExceeded):  # too many unfinished: the queue is full for this key; else its rate
        return V2Refused("queue_full" if exc.kind == "queue" else "rate_limited", str(exc))
    if isinstance(exc, NotFound):  # v2 calls a task a job
        return V2Refused("not_found", re.sub(r"^no task ", "no job ", str(exc)))
    if isinstance(exc, (GraphRefused, NotInFleet)):
        return V2Refused("invalid_workflow", str(exc), {"node_errors": exc.node_errors, "error": exc.error})
    if isinstance(exc, Fenced):  # leadership moved under the request: the next try reaches the new leader
        return V2Refused("upstream_unreachable", "leadership moved to another replica while this request ran; retry")
    simple: list[tuple[type[Exception], str]] = [
        (TransientError, "upstream_unreachable"),
        (BodyTooLarge, "payload_too_large"), (Unauthenticated, "unauthorized"), (Forbidden, "forbidden")]
    for kind, code in simple:
        if isinstance(exc, kind):
            return V2Refused(code, str(exc))
    if isinstance(exc, RequestValidationError):
        return V2Refused("invalid_request", "; ".join(str(e.get("msg")) for e in exc.errors()), status=422)
    if isinstance(exc, HTTPException):
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return V2Refused(code, str(exc.detail), status=exc.status_code)
    status = getattr(exc, "status", None)  # api.errors.BadRequest, and comfyart's 4xx errors mapped by the caller
    return V2Refused("invalid_request", str(exc), status=status if isinstance(status, int) else None)


def v2_answer(exc: Exception, status: int | None = None) -> JSONResponse:
    """The answer to ``exc`` on a v2 path; ``status``: what comfyart's table gives it, for an error of no v2
    code."""
    refusal = refusal_of(exc)
    if status is not None and refusal.code == "invalid_request" and not isinstance(exc, V2Refused):
        refusal.status = status
    headers = {"Retry-After": _retry_after(exc)} if refusal.code in RETRY_AFTER_CODES or \
        isinstance(exc, (TransientError, Fenced)) else None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="comfyart"'}
    return JSONResponse(error_body(refusal.code, refusal.message, refusal.details), status_code=refusal.status,
                        headers=headers)
