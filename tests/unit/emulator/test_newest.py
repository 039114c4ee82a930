"""The newest server's decisions (emulator.newest): prompt ids, each prompt's preview method, the extra_data a
prompt is queued with."""
from __future__ import annotations

import uuid

import pytest

from comfyart.emulator.newest import (
    PREVIEW_METHODS,
    is_canonical_uuid,
    preview_method,
    queued_extra_data,
    sends_previews,
)


def test_only_canonical_lowercase_uuids_are_prompt_ids():
    made = str(uuid.uuid4())
    assert is_canonical_uuid(made)
    for bad in (made.upper(), made.replace("-", ""), "{" + made + "}", "comfyart-1", "", None, 7, [made]):
        assert not is_canonical_uuid(bad), bad


@pytest.mark.parametrize("launch", PREVIEW_METHODS)
@pytest.mark.parametrize("requested", [None, "default", "bogus", 3, *PREVIEW_METHODS])
def test_the_newest_server_lets_a_prompt_pick_its_previews_and_0_3_64_does_not(launch, requested):
    newest = preview_method(True, launch, requested)
    assert newest == (requested if requested in PREVIEW_METHODS else launch)
    assert preview_method(False, launch, requested) == launch


def test_only_none_sends_no_previews():
    assert [sends_previews(m) for m in PREVIEW_METHODS] == [False, True, True, True]


def test_newest_extra_data_takes_the_usage_source_header_drops_secrets_and_stamps_the_time():
    body = {"client_id": "c", "auth_token_comfy_org": "t", "api_key_comfy_org": "k", "extra_pnginfo": {}}
    assert queued_extra_data(body, "header", newest=True, now_ms=5) == {
        "client_id": "c", "extra_pnginfo": {}, "comfy_usage_source": "header", "create_time": 5}
    own = queued_extra_data({"comfy_usage_source": "body"}, "header", newest=True, now_ms=5)
    assert own["comfy_usage_source"] == "body"
    assert "comfy_usage_source" not in queued_extra_data({}, None, newest=True, now_ms=5)
    assert queued_extra_data(body, "header", newest=False, now_ms=5) == body  # 0.3.64 queues the body's as it is
