"""Draining a backend before it goes away (policy.drain): an address as a pod gives it, the address a backend's URL
points at, and how far a drain is."""
from __future__ import annotations

import pytest

from comfyart.policy.drain import Address, Drain, drain_progress, parse_address, url_address


@pytest.mark.parametrize("text, expected", [
    ("127.0.3.7:8188", Address("127.0.3.7", 8188)), (" 127.0.0.2:80 ", Address("127.0.0.2", 80)),
    ("[::1]:8188", Address("::1", 8188)), ("[0:0::1]:1", Address("::1", 1)),
    ("ComfyUI-0.ComfyUI.gpu.svc:8188", Address("comfyui-0.comfyui.gpu.svc", 8188)),
    ("comfy.gpu.svc.:8188", Address("comfy.gpu.svc", 8188)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, why", [
    ("127.0.3.7", "is not HOST:PORT"), (":8188", "is not HOST:PORT"), ("127.0.3.7:", "is not HOST:PORT"),
    ("127.0.3.7:http", "is not HOST:PORT"), ("127.0.3.7:0", "is not HOST:PORT"),
    ("127.0.3.7:65536", "is not HOST:PORT"),
    ("::1:8188", "in brackets"), ("", "is not HOST:PORT"),
])
def test_parse_address_refuses_with_one_line(text, why):
    with pytest.raises(ValueError, match=why) as refused:
        parse_address(text)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.3.7:8188", Address("127.0.3.7", 8188)), ("http://127.0.3.7:8188/", Address("127.0.3.7", 8188)),
    ("http://user:secret@127.0.3.7:8188/base", Address("127.0.3.7", 8188)),
    ("http://127.0.3.7", Address("127.0.3.7", 80)), ("https://gpu.example", Address("gpu.example", 443)),
    ("http://[0:0:0::1]:8188", Address("::1", 8188)), ("http://Box.Local:8188", Address("box.local", 8188)),
    ("ftp://127.0.3.7", None), ("not a url", None), ("http://127.0.3.7:99999", None), ("", None),
])
def test_url_address(url, expected):
    assert url_address(url) == expected


def test_a_pod_address_matches_its_backend_url_whatever_the_spelling():
    assert parse_address("[::1]:8188") == url_address("http://[0000::0001]:8188/")
    assert parse_address("127.0.3.7:8188") != url_address("http://127.0.3.7:8189")


@pytest.mark.parametrize("backend, expected", [
    (None, Drain.DONE),  # left the pool: a drained container is stopped and forgotten
    ({"mode": "draining", "inflight": 0}, Drain.DONE),
    ({"mode": "draining", "inflight": 2}, Drain.BUSY),
    ({"mode": "active", "inflight": 0}, Drain.NOT_DRAINING),
    ({"mode": "disabled", "inflight": 1}, Drain.NOT_DRAINING),
    ({"mode": "active", "inflight": 3}, Drain.NOT_DRAINING),
])
def test_drain_progress(backend, expected):
    assert drain_progress(backend) is expected
