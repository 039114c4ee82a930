"""The sign-in page and form (``api.signin``): what the page shows and may load, and what a form presents."""
from __future__ import annotations

import base64
import hashlib
import re

import pytest

from comfyart.api.signin import PAGE_HEADERS, STYLE, credentials_of, signin_page
from comfyart.auth import Credentials


def test_the_page_loads_nothing_runs_nothing_and_posts_only_here() -> None:
    page = signin_page("/comfy/", admin_user=False)
    csp = PAGE_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script" not in page and "http://" not in page and "https://" not in page
    # its one inline style is allowed by its hash, and nothing else is
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and re.findall(r"<style>(.*?)</style>", page, re.S) == [STYLE]


def test_the_admin_fields_show_only_with_an_admin_user_and_every_value_is_escaped() -> None:
    assert 'name="password"' not in signin_page("/comfy/", admin_user=False)
    assert 'name="user"' in signin_page("/comfy/", admin_user=True)
    page = signin_page('/comfy/"><script>x</script>', admin_user=False, message="<b>no</b>",
                       signed_in_as="<i>eve</i>")
    assert "<script>" not in page and "<b>no</b>" not in page and "<i>eve</i>" not in page
    assert "&lt;i&gt;eve&lt;/i&gt;" in page and 'action="signout"' in page
    assert 'action="signout"' not in signin_page("/comfy/", admin_user=False)


def test_a_typed_key_wins_then_the_user_and_password() -> None:
    assert credentials_of({"key": " ca_x ", "user": "root", "password": "pw"}) == Credentials(bearer="ca_x")
    assert credentials_of({"key": "", "user": "root", "password": "pw"}) == Credentials(basic=("root", "pw"))
    assert credentials_of({"user": "root"}) == Credentials()
    assert credentials_of({}) == Credentials()


@pytest.mark.parametrize("scheme, public_url, secure", [
    ("https", None, True), ("http", None, False), ("http", "https://comfy.example.org", True),
    ("http", "HTTPS://comfy.example.org/base", True), ("http", "http://127.0.0.1:8100", False),
])
def test_the_cookie_is_secure_when_the_browser_came_over_https(scheme: str, public_url: str | None, secure: bool):
    """Behind a proxy that ends TLS the request here is plain http: ``server.public_url`` says how browsers come."""
    from starlette.requests import Request

    from comfyart.api.signin import is_https

    request = Request({"type": "http", "scheme": scheme, "server": ("127.0.0.1", 8100), "path": "/comfy/signin",
                       "headers": [], "query_string": b""})
    assert is_https(request, public_url) is secure
