"""Secrets in URLs (redact): passwords are shown as ***."""
from __future__ import annotations

import pytest

from comfyart.redact import redact_url


@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://user:hunter2@redis:6379", "redis://user:***@redis:6379"),
    ("https://u:p@comfy.example:8188/x", "https://u:***@comfy.example:8188/x"),
    ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
])
def test_passwords_in_urls_are_hidden(url, shown):
    assert redact_url(url) == shown
