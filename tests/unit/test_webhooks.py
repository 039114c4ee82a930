"""Webhooks (webhooks): the payload and its signature, and which targets a client may name."""
from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote

import pytest

from comfyart.webhooks import address_is_public, literal_target_problem, payload, signature
from tests.support.tasks import make_output, make_task


@pytest.mark.parametrize("url, refused", [
    ("http://127.0.0.1:9/x", True), ("http://198.18.0.1/x", True), ("http://192.0.2.1/x", True),
    ("http://169.254.169.254/latest/meta-data", True), ("http://[::1]:80/x", True), ("http://[fe80::1]/x", True),
    ("http://[::ffff:127.0.0.1]/x", True), ("http://0.0.0.0/x", True), ("http://100.64.0.1/x", True),
    ("https://93.184.215.14/hook", False), ("https://[2606:4700::6810:84e5]/hook", False),
    ("https://hooks.example.com/x", False),  # a name: judged by what it resolves to, on delivery
])
def test_webhook_targets_given_as_addresses_are_judged_at_once(url, refused):
    assert (literal_target_problem(url) is not None) is refused


@pytest.mark.parametrize("address, public", [("8.8.8.8", True), ("127.0.0.1", False), ("::1", False),
                                             ("::ffff:169.254.1.1", False), ("fe80::1%eth0", False),
                                             ("nope", False)])
def test_public_addresses(address, public):
    assert address_is_public(address) is public


def test_webhook_payload_and_signature():
    body = payload(make_task(outputs=[make_output("a b.png")]),
                   lambda t, name: f"http://example.test:8100/api/tasks/{t.id}/outputs/{quote(name)}")
    record = json.loads(body)
    assert "prompt" not in record and record["id"] == "T1"
    assert record["outputs"][0]["url"] == "http://example.test:8100/api/tasks/T1/outputs/a%20b.png"
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
