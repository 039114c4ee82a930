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
