"""The error mapping (api.errors): each error's status and Retry-After."""
from __future__ import annotations

import pytest

from comfyart.api.errors import BadRequest, headers_of, status_of
from comfyart.comfy.validate import GraphRefused, Verdict
from comfyart.errors import NotFound, QuotaExceeded, StoreUnavailable
from comfyart.workflows.parameters import ParameterError


@pytest.mark.parametrize("error, status", [
    pytest.param(NotFound("x"), 404, id="not-found"),
    pytest.param(ParameterError({"seed": "must be an integer"}), 422, id="parameter"),
    pytest.param(StoreUnavailable("x"), 503, id="transient-subclass"),
    pytest.param(QuotaExceeded("x", 0.2), 429, id="quota"),
    pytest.param(BadRequest(415, "x"), 415, id="bad-request"),
    pytest.param(GraphRefused(Verdict({"type": "prompt_no_outputs", "message": "Prompt has no outputs"})), 400,
                 id="graph-refused"),
])
def test_each_error_answers_its_status(error: Exception, status: int):
    assert status_of(error) == status


def test_retry_after_is_whole_seconds_and_never_zero():
    assert headers_of(QuotaExceeded("x", 0.2)) == {"Retry-After": "1"}
    assert headers_of(StoreUnavailable("x", retry_after_s=2.4)) == {"Retry-After": "2"}
    assert headers_of(NotFound("x")) is None


@pytest.mark.parametrize("path", ["/api/tasks/x", "/api/v2/jobs/x/cancel"])
async def test_a_request_fenced_by_a_leadership_change_answers_503_retry_after_1(path: str):
    """Leadership moved while the request ran (``Fenced`` out of a write of a term that ended): a 503 that says so in
    one line and when to come back, never a 500; v2 paths in the v2 envelope."""
    from fastapi import FastAPI
    from httpx import ASGITransport, AsyncClient

    from comfyart.api.errors import add_error_handlers
    from comfyart.errors import Fenced

    app = FastAPI()
    add_error_handlers(app)

    @app.post(path)
    async def moved() -> None:
        raise Fenced("COMFYART_FENCED epoch 17 is not the current 18")

    async with AsyncClient(transport=ASGITransport(app=app, raise_app_exceptions=False),
                           base_url="http://127.0.0.1") as client:
        answer = await client.post(path)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    body = answer.json()
    message = body["error"]["message"] if "error" in body else body["detail"]
    assert message == "leadership moved to another replica while this request ran; retry"
