"""How a request's body is read whatever its declared type (api.bodies): JSON parsed leniently, a body that is no
JSON refused naming its type; a workflow run told apart as a form or JSON. Pure, no server."""
from __future__ import annotations

import pytest

from comfyart.api.bodies import declares_json, media_type, parse_body, run_sent_as_form
from comfyart.api.errors import BadRequest
from comfyart.errors import InvalidInput

DEPTH = 8


@pytest.mark.parametrize("content_type, media", [
    ("", ""), ("application/json", "application/json"), ("Application/JSON; charset=utf-8", "application/json"),
    ("multipart/form-data; boundary=xyz", "multipart/form-data"), (" text/plain ;x=y", "text/plain"),
])
def test_media_type(content_type, media):
    assert media_type(content_type) == media


@pytest.mark.parametrize("media, json", [
    ("", True), ("application/json", True), ("application/problem+json", True), ("text/plain", False),
    ("application/x-www-form-urlencoded", False), ("multipart/form-data", False), ("text/x+json", False),
])
def test_declares_json(media, json):
    assert declares_json(media) is json


@pytest.mark.parametrize("content_type", [
    "", "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain",
    "application/octet-stream",
])
def test_a_body_that_parses_is_json_whatever_its_declared_type(content_type):
    # curl -d labels its body application/x-www-form-urlencoded unless told otherwise
    assert parse_body(b'{"params": {"a": 1}}', content_type, DEPTH) == {"params": {"a": 1}}


@pytest.mark.parametrize("content_type, status, reason", [
    ("application/json", 400, "body is not valid JSON"),
    ("", 400, "body is not valid JSON"),
    ("application/x-www-form-urlencoded", 415,
     "body sent as application/x-www-form-urlencoded is not JSON: send a JSON body with "
     "'content-type: application/json'"),
    ("text/plain; charset=utf-8", 415, "body sent as text/plain is not JSON"),
    ("multipart/form-data; boundary=b", 415, "this route takes JSON, not multipart/form-data"),
])
def test_a_body_that_does_not_parse_is_refused_naming_its_type(content_type, status, reason):
    with pytest.raises(BadRequest) as refused:
        parse_body(b"prompt=a+lighthouse", content_type, DEPTH)
    assert refused.value.status == status and reason in str(refused.value)


def test_multipart_is_refused_even_when_it_would_parse():
    with pytest.raises(BadRequest) as refused:
        parse_body(b"{}", "multipart/form-data; boundary=b", DEPTH)
    assert refused.value.status == 415


def test_too_deep_a_body_is_refused_whatever_its_type():
    with pytest.raises(InvalidInput, match="nested more than 8 levels"):
        parse_body(b"[" * 20 + b"]" * 20, "text/plain", DEPTH)


@pytest.mark.parametrize("media, raw, form", [
    ("multipart/form-data", b"", True),
    ("application/x-www-form-urlencoded", b"params=%7B%7D&priority=high", True),
    ("application/x-www-form-urlencoded", b"", True),
    ("application/x-www-form-urlencoded", b'{"params": {"prompt": "x"}}', False),  # curl -d '{...}'
    ("application/x-www-form-urlencoded", b'  \n[1]', False),
    ("application/json", b'{"params": {}}', False),
    ("", b"", False),
    ("text/plain", b"params=1", False),  # not a form: read as JSON, and refused as such
])
def test_a_run_is_a_form_when_multipart_or_url_encoded_without_json(media, raw, form):
    assert run_sent_as_form(media, raw) is form
