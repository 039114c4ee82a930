"""The pure rules of browser sessions (``comfyart.auth``): where a sign-in may send a browser, the session cookie,
reading a Cookie header, which Origins are this server, and what a session stands for."""
from __future__ import annotations

import pytest

from comfyart.auth import (
    SessionKind,
    SessionRef,
    cleared_session_cookie,
    cookie_value,
    local_next,
    origin_allowed,
    password_fingerprint,
    session_cookie,
    session_token_digest,
)


@pytest.mark.parametrize("target", ["/comfy/", "/comfy/index.html", "/comfy/?workflow=a%20b", "/comfy//x"])
def test_a_path_of_the_editor_is_where_a_sign_in_goes(target: str) -> None:
    assert local_next(target) == target


@pytest.mark.parametrize("target", [
    None, "", "https://evil.example/", "//evil.example/comfy/", "/\\evil.example", "/comfy/\\evil.example",
    "http:/comfy/", "javascript:alert(1)", "/api/keys", "/comfy", "comfy/", " /comfy/", "/comfy/\r\nSet-Cookie:x",
    "/comfy/\tx", "/comfy/\x7f", "/comfy/ x", "/comfy/" + "a" * 3000, "/dashboard",
])
def test_anything_else_goes_to_the_editor(target: str | None) -> None:
    assert local_next(target) == "/comfy/"


def test_the_session_cookie_is_http_only_strict_on_every_path_and_secure_only_over_https() -> None:
    assert session_cookie("tok", max_age_s=604800, secure=False) == \
        "comfyart_session=tok; HttpOnly; SameSite=Strict; Path=/; Max-Age=604800"
    assert session_cookie("tok", max_age_s=60, secure=True) == \
        "comfyart_session=tok; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
    assert cleared_session_cookie(secure=False) == "comfyart_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    assert cleared_session_cookie(secure=True).endswith("; Max-Age=0; Secure")


@pytest.mark.parametrize(("header", "value"), [
    ("comfyart_session=abc", "abc"), ("a=1; comfyart_session=abc; b=2", "abc"), ("a=1;comfyart_session=a-b_c", "a-b_c"),
    ('comfyart_session="abc"', "abc"), ("comfyart_session=", None), ("comfyart_session", None),
    ("xcomfyart_session=abc", None), ("comfyart_sessionx=abc", None), ("", None), (None, None),
    ("comfyart_session=; comfyart_session=second", "second"),
])
def test_the_session_is_read_from_its_own_cookie_only(header: str | None, value: str | None) -> None:
    assert cookie_value(header, "comfyart_session") == value


@pytest.mark.parametrize(("origin", "host", "also"), [
    ("http://127.0.0.1:8100", "127.0.0.1:8100", None),
    ("http://LOCALHOST:8100", "localhost:8100", None),
    ("https://comfy.example", "comfy.example", None),  # TLS taken off by a proxy, the Host kept
    ("https://comfy.example", "comfy.example:443", None),
    ("http://comfy.example", "comfy.example:80", None),
    ("http://[::1]:8100", "[::1]:8100", None),
    ("https://comfy.example", "127.0.0.5:8100", "https://comfy.example/"),  # behind a proxy that rewrites the Host
    ("https://comfy.example:8443", "127.0.0.5:8100", "https://comfy.example:8443/base"),
])
def test_an_origin_of_this_server_is_allowed(origin: str, host: str, also: str | None) -> None:
    assert origin_allowed(origin, host, also)


@pytest.mark.parametrize(("origin", "host", "also"), [
    ("http://evil.example", "127.0.0.1:8100", None),
    ("http://127.0.0.1:8101", "127.0.0.1:8100", None),
    ("https://comfy.example", "comfy.example:80", None),
    ("http://comfy.example.evil.example", "comfy.example", None),
    ("http://evil.example", None, None),
    ("null", "127.0.0.1:8100", None),
    ("", "127.0.0.1:8100", None),
    ("127.0.0.1:8100", "127.0.0.1:8100", None),
    ("file://127.0.0.1:8100", "127.0.0.1:8100", None),
    ("http://127.0.0.1:8100/path", "127.0.0.1:8100", None),
    ("http://[::2]:8100", "[::1]:8100", None),
    ("https://evil.example", "127.0.0.5:8100", "https://comfy.example"),
    ("http://comfy.example", "127.0.0.5:8100", "https://comfy.example"),
])
def test_any_other_origin_is_foreign(origin: str, host: str | None, also: str | None) -> None:
    assert not origin_allowed(origin, host, also)


@pytest.mark.parametrize("ref", [
    SessionRef(SessionKind.API_KEY, key_id="abcdefghijkl", sha256="0" * 64),
    SessionRef(SessionKind.CONFIG_KEY, sha256="1" * 64),
    SessionRef(SessionKind.ADMIN_USER, user="root", fingerprint="2" * 64),
])
def test_a_session_names_its_credential_and_reads_back(ref: SessionRef) -> None:
    assert SessionRef.decode(ref.encode()) == ref


@pytest.mark.parametrize("raw", ["", "[]", "1", '{"kind": "password"}', "{}", "not json"])
def test_a_value_that_is_no_session_does_not_decode(raw: str) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        SessionRef.decode(raw)


def test_tokens_and_passwords_are_kept_only_as_digests() -> None:
    assert session_token_digest("tok") == session_token_digest("tok") != session_token_digest("tok2")
    assert len(session_token_digest("tok")) == 64
    fingerprint = password_fingerprint("root", "correct horse battery")
    assert fingerprint == password_fingerprint("root", "correct horse battery")
    assert "correct horse battery" not in fingerprint
    assert fingerprint != password_fingerprint("root", "another password!")
    assert fingerprint != password_fingerprint("admin", "correct horse battery")
