"""Signing in once in a browser, for ComfyUI's web editor at ``/comfy/``: the page's fetches and WebSocket carry no
Authorization header, so ``/comfy/signin`` takes an API key (or the admin user and password) once and answers with
an HttpOnly, SameSite=Strict session cookie that names the caller from then on (``api.auth``). A key is never put
in a URL: URLs end up in access logs and browser history."""
from __future__ import annotations

import base64
import hashlib
import html
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from comfyart.api.auth import Authenticator
from comfyart.api.deps import ServicesDep
from comfyart.api.errors import BadRequest
from comfyart.auth import (
    EDITOR_PATH,
    SESSION_COOKIE,
    SIGNIN_PATH,
    SIGNOUT_PATH,
    Credentials,
    Principal,
    cleared_session_cookie,
    cookie_value,
    local_next,
    session_cookie,
)
from comfyart.errors import QuotaExceeded

MAX_FORM_BYTES = 16 * 1024  # a key, a user, a password and a path: far less
FAILED = "Sign-in failed: the key, or the user and password, were not accepted."

STYLE = """body{font:15px/1.4 system-ui,sans-serif;background:#1e1e1e;color:#ddd;display:flex;
justify-content:center;margin:0;padding-top:12vh}main{width:22rem;background:#2a2a2a;padding:1.5rem 2rem;
border-radius:8px}h1{font-size:1.2rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .2rem}
input{box-sizing:border-box;width:100%;padding:.45rem;background:#1e1e1e;color:#eee;border:1px solid #555;
border-radius:4px}button{margin-top:1rem;padding:.5rem 1.2rem;border:0;border-radius:4px;background:#3b7dd8;
color:#fff;cursor:pointer}p.error{color:#ff8080}p.or{margin:1.2rem 0 0;color:#999}a{color:#8bb8ff}"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# nothing loads from anywhere, no script runs; the form posts only here; no other site may frame the page
PAGE_HEADERS = {"Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; "
                                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}

router = APIRouter(include_in_schema=False)  # pages for a browser, not API operations


def signin_page(next_path: str, *, admin_user: bool, message: str | None = None,
                signed_in_as: str | None = None) -> str:
    """The sign-in page: a field for an API key, and the admin user's fields where one is configured."""
    hidden = f'<input type="hidden" name="next" value="{html.escape(next_path)}">'
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    current = (f'<p>Signed in as <b>{html.escape(signed_in_as)}</b>. <a href="{EDITOR_PATH}">Open the editor</a>'
               f'</p><form method="post" action="signout"><button type="submit">Sign out</button></form>'
               f'<p class="or">or sign in as someone else:</p>') if signed_in_as else ""
    admin = ('<p class="or">or, as the admin user:</p>'
             '<label for="user">User</label><input id="user" name="user" autocomplete="username">'
             '<label for="password">Password</label>'
             '<input id="password" name="password" type="password" autocomplete="current-password">'
             ) if admin_user else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in - comfyart</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><main><h1>Sign in to the ComfyUI editor</h1>{error}{current}'
            f'<form method="post" action="signin">{hidden}'
            f'<label for="key">API key</label>'
            f'<input id="key" name="key" type="password" autocomplete="off" autofocus>{admin}'
            f'<button type="submit">Sign in</button></form></main></body></html>')


def credentials_of(form: dict[str, str]) -> Credentials:
    """What the form presents: the key when one was typed, else the user and password."""
    key = form.get("key", "").strip()
    if key:
        return Credentials(bearer=key)
    if form.get("user") and form.get("password"):
        return Credentials(basic=(form["user"], form["password"]))
    return Credentials()


def is_https(request: Request, public_url: str | None) -> bool:
    """Whether the browser reached this server over https: the request's own scheme, or the configured
    ``server.public_url`` (behind a proxy that ends TLS, the request here is plain http)."""
    return request.url.scheme == "https" or (public_url or "").lower().startswith("https://")


def _page(request: Request, authenticator: Authenticator, next_path: str | None, status: int = 200,
          message: str | None = None) -> Response:
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    body = signin_page(local_next(next_path), admin_user=authenticator.admin_user is not None, message=message,
                       signed_in_as=principal.name if principal is not None else None)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get(SIGNIN_PATH)
async def signin_form(request: Request, services: ServicesDep) -> Response:
    authenticator = services.security.authenticator
    if authenticator is None:  # auth off: nothing to sign in to
        return RedirectResponse(EDITOR_PATH, status_code=303)
    return _page(request, authenticator, request.query_params.get("next"))


@router.post(SIGNIN_PATH)
async def signin(request: Request, services: ServicesDep) -> Response:
    """A session for the key, or the admin user, in the form: 303 to ``next`` (a path of the editor) with its
    cookie; anything wrong: 401 and the page again, saying no more than that it failed; more than 20 attempts a
    minute from one address: 429."""
    authenticator = services.security.authenticator
    if authenticator is None:
        return RedirectResponse(EDITOR_PATH, status_code=303)
    form = await read_form(request)
    quotas = services.security.quotas
    if quotas is not None:  # every attempt counts, before any credential is looked at
        try:
            await quotas.sign_in_attempt(request.client.host if request.client else "unknown")
        except QuotaExceeded as exc:
            request.scope.setdefault("state", {})["principal"] = None
            refused = _page(request, authenticator, form.get("next"), status=429, message=str(exc).capitalize())
            refused.headers["Retry-After"] = exc.retry_after
            return refused
    opened = await authenticator.sign_in(credentials_of(form))
    if opened is None:
        request.scope.setdefault("state", {})["principal"] = None  # the page then offers no sign-out
        return _page(request, authenticator, form.get("next"), status=401, message=FAILED)
    _, token = opened
    assert authenticator.sessions is not None  # sign_in opens none without
    answer = RedirectResponse(local_next(form.get("next")), status_code=303, headers={"Cache-Control": "no-store"})
    answer.headers.append("Set-Cookie", session_cookie(token, max_age_s=authenticator.sessions.ttl_s,
                                                       secure=is_https(request, services.security.public_url)))
    return answer


@router.post(SIGNOUT_PATH)
async def signout(request: Request, services: ServicesDep) -> Response:
    """Ends the session of the cookie (if any), clears the cookie, and goes back to the sign-in page."""
    authenticator = services.security.authenticator
    token = cookie_value(request.headers.get("cookie"), SESSION_COOKIE)
    if authenticator is not None and authenticator.sessions is not None and token is not None:
        await authenticator.sessions.delete(token)
    answer = RedirectResponse(SIGNIN_PATH, status_code=303, headers={"Cache-Control": "no-store"})
    answer.headers.append("Set-Cookie", cleared_session_cookie(secure=is_https(request, services.security.public_url)))
    return answer


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (the first value of each), read no further than MAX_FORM_BYTES."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest(415, "send the sign-in form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest(413, f"sign-in form larger than {MAX_FORM_BYTES} bytes")
    try:
        fields: dict[str, Any] = parse_qs(body.decode(), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the sign-in form could not be read") from None
    return {name: values[0] for name, values in fields.items() if values}
