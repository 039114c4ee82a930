"""Limits on input (api.limits): JSON depth, parsing, and the body limit of each kind of request."""
from __future__ import annotations

import json

import pytest

from comfyart.api.limits import JSONTooDeep, body_limit, json_depth_exceeds, parse_json
from comfyart.config.sections import LimitsConfig


@pytest.mark.parametrize("value, depth, exceeds", [
    (1, 1, False), ([], 1, False), ([[]], 1, True), ({"a": [1]}, 2, False), ({"a": [{}]}, 2, True),
    (json.loads("[" * 64 + "]" * 64), 64, False), (json.loads("[" * 65 + "]" * 65), 64, True),
])
def test_json_depth(value, depth, exceeds):
    assert json_depth_exceeds(value, depth) is exceeds


def test_parse_json_refuses_depth_and_garbage_with_value_errors():
    assert parse_json(b'{"a": [1, {"b": 2}]}', 3) == {"a": [1, {"b": 2}]}
    with pytest.raises(JSONTooDeep):
        parse_json("[" * 10 + "]" * 10, 5)
    with pytest.raises(JSONTooDeep):
        parse_json("[" * 200_000 + "]" * 200_000, 64)  # past the parser's own recursion limit
    with pytest.raises(ValueError):
        parse_json(b"\xff\xfe", 64)
    with pytest.raises(ValueError):
        parse_json("{", 64)


def test_uploads_get_their_own_body_limit():
    limits = LimitsConfig(max_body_bytes=2000, max_upload_bytes=5000)
    assert body_limit(limits, "application/json") == 2000
    assert body_limit(limits, "multipart/form-data; boundary=x") > 5000
