"""The v2 error envelope and each code's HTTP status (api.v2.errors), as API-V2.md §3 and the SDK read them."""
from __future__ import annotations

import pytest
from comfy_low.errors import error_from_envelope
from comfy_low.models import ErrorEnvelope

from comfyart.api.v2.errors import ERROR_STATUS, RETRY_AFTER_CODES, error_body, status_of

# API-V2.md §3 and §6.7, as written there
CONTRACT = {
    "invalid_workflow": 422, "workflow_format_ui": 422, "missing_asset": 422, "hash_mismatch": 409,
    "blob_not_found": 404, "idempotency_key_reuse": 422, "queue_full": 429, "insufficient_credits": 402,
    "not_found": 404, "unauthorized": 401, "forbidden": 403, "rate_limited": 429, "upstream_error": 500,
    "too_many_streams": 429, "not_implemented": 501, "asset_in_use": 409, "deployment_not_ready": 429,
    "deployment_stopped": 422, "invalid_request": 400, "upstream_unreachable": 503, "payload_too_large": 413,
    "output_unavailable": 404, "metadata_invalid": 422, "metadata_not_supported": 422,
    "public_deployment_no_list": 403, "invalid_metadata_filter": 400, "invalid_cursor": 400,
}


def test_every_code_of_the_contract_has_its_status():
    assert CONTRACT == ERROR_STATUS
    assert all(status_of(code) == status for code, status in CONTRACT.items())


def test_retry_after_goes_with_the_429s_that_say_when():
    assert {"queue_full", "rate_limited", "too_many_streams", "deployment_not_ready"} == RETRY_AFTER_CODES
    assert all(ERROR_STATUS[code] == 429 for code in RETRY_AFTER_CODES)


@pytest.mark.parametrize("code", sorted(CONTRACT))
def test_an_envelope_is_what_the_sdk_reads(code):
    body = error_body(code, "one line", {"node_errors": {"2": {}}} if code == "invalid_workflow" else None)
    ErrorEnvelope.model_validate(body)
    assert error_from_envelope(CONTRACT[code], body).code == code


def test_an_envelope_has_details_or_null():
    assert error_body("not_found", "job T1 not found") == {
        "error": {"code": "not_found", "message": "job T1 not found", "details": None}}
    assert error_body("missing_asset", "m", {"missing_ids": ["a"]})["error"]["details"] == {"missing_ids": ["a"]}


def test_an_unknown_code_never_reaches_a_client():
    with pytest.raises(KeyError):
        error_body("no_such_code", "m")
