"""The one place errors become HTTP answers: comfyart's error tree, a request's own ``BadRequest`` and FastAPI's
validation errors each leave as a status and a one-line ``detail`` (with Retry-After or WWW-Authenticate where
they say when to come back, or how to sign in); never a stack trace."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from comfyart.api.auth import Unauthenticated
from comfyart.api.limits import BodyTooLarge
from comfyart.api.v2.answers import V2Refused, v2_answer
from comfyart.api.v2.errors import is_v2
from comfyart.comfy.inventory import NotInFleet
from comfyart.comfy.validate import GraphRefused
from comfyart.errors import (
    Conflict,
    Fenced,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotFound,
    QuotaExceeded,
    StateConflict,
    TransientError,
)
from comfyart.workflows.parameters import ParameterError


class BadRequest(Exception):
    """A request refused at the HTTP edge with its own status (400, 409, 413, 415...): what the error tree has no
    word for, such as a body that is not JSON or an upload that is not an image."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


# every error a request can cause, and its status; the most specific class listed wins. Their messages are one
# line already.
STATUS: dict[type[Exception], int] = {
    NotFound: 404, ParameterError: 422, InvalidInput: 422, Conflict: 412, StateConflict: 409,
    InvalidTransition: 409, Forbidden: 403, QuotaExceeded: 429, TransientError: 503, BodyTooLarge: 413,
    Unauthenticated: 401, GraphRefused: 400, NotInFleet: 422, Fenced: 503,
}
# leadership moved while the request ran (a write under a term that ended): the next try reaches the new leader, or
# is forwarded to it; the fence's own message names Redis scripts, which the caller has no use for
MOVED = "leadership moved to another replica while this request ran; retry"


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def status_of(exc: Exception) -> int:
    if isinstance(exc, BadRequest):
        return exc.status
    return next(STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS)


def headers_of(exc: Exception) -> dict[str, str] | None:
    """When to come back (a quota, an unavailable store), or how to sign in."""
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": 'Bearer realm="comfyart"'}
    if isinstance(exc, QuotaExceeded):
        return {"Retry-After": exc.retry_after}
    if isinstance(exc, TransientError):
        return {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, Fenced):
        return {"Retry-After": "1"}
    return None


async def answer(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, V2Refused) or is_v2(request.url.path):  # the v2 API's own envelope
        return v2_answer(exc, None if isinstance(exc, V2Refused) else status_of(exc))
    if isinstance(exc, GraphRefused):  # ComfyUI's own answer beside the one line, as POST /prompt gives it
        return JSONResponse({"detail": str(exc), "error": exc.error, "node_errors": exc.node_errors},
                            status_code=status_of(exc))
    return problem(status_of(exc), MOVED if isinstance(exc, Fenced) else str(exc), headers_of(exc))


def one_line(exc: RequestValidationError) -> str:
    """Each error of a query or path parameter as ``name: message``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts)


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    if is_v2(request.url.path):
        return v2_answer(exc)
    return problem(422, one_line(exc) if isinstance(exc, RequestValidationError) else str(exc))


async def http_answer(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed): FastAPI's answer, or the v2 envelope."""
    if is_v2(request.url.path) or not isinstance(exc, HTTPException):
        return v2_answer(exc)
    return await http_exception_handler(request, exc)


def add_error_handlers(app: FastAPI) -> None:
    for kind in (*STATUS, BadRequest, V2Refused):
        app.add_exception_handler(kind, answer)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_answer)
