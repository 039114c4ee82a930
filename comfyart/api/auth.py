"""Who is calling, at the HTTP edge: the middleware that names the caller of every request (or turns it away),
and the route dependencies that read it."""
from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends
from loguru import logger
from starlette.requests import HTTPConnection

from comfyart.auth import NOBODY, Credentials, KeyRecord, Principal, Role, credentials_from, hash_key, key_id_of
from comfyart.errors import Forbidden, TransientError
from comfyart.store.api_keys import KeyStore


class Authenticator:
    """Turns presented credentials into a Principal, or None when they are wrong, revoked or absent."""

    def __init__(self, keys: KeyStore, *, config_keys: Sequence[KeyRecord] = (),
                 admin_user: tuple[str, str] | None = None) -> None:
        self.keys = keys
        self.config_keys = {record.sha256: record for record in config_keys}
        self.admin_user = admin_user

    async def identify(self, credentials: Credentials) -> Principal | None:
        if credentials.basic is not None:
            if self.admin_user is None:
                return None
            user, password = credentials.basic
            expected_user, expected_password = self.admin_user
            # both compared, always: the time taken says nothing of which one was wrong
            user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
            password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
            return Principal(id=f"user:{expected_user}", name=expected_user, role=Role.ADMIN) \
                if user_ok and password_ok else None
        if credentials.bearer is None:
            return None
        digest = hash_key(credentials.bearer)
        configured = self.config_keys.get(digest)
        if configured is not None:
            return configured.principal()
        key_id = key_id_of(credentials.bearer)
        if key_id is None:
            return None
        try:
            record = await self.keys.get(key_id)
        except (ValueError, KeyError):  # a record that does not decode is no valid key
            logger.warning("unreadable key record key_id={}", key_id)
            return None
        if record is None or record.revoked_ms is not None or not hmac.compare_digest(record.sha256, digest):
            return None
        return record.principal()


# ---------------------------------------------------------------------------------------------------- middleware
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class AuthMiddleware:
    """Puts the caller's Principal in ``scope["state"]["principal"]`` and turns away anyone without valid
    credentials, except on ``/healthz``, the dashboard's files (``/`` and ``/ui/…``: they hold no data, and the page
    asks for a key), and a GET that carries a URL signature (its route checks it). Routes then only decide what the
    Principal may do."""

    OPEN_PATHS = frozenset({"/healthz", "/"})
    OPEN_PREFIX = "/ui/"
    SIGNED_PATHS = re.compile(r"^/api/tasks/[^/]+/outputs/[^/]+$")

    def __init__(self, app: ASGIApp, authenticator: Authenticator | None) -> None:
        self.app = app
        self.authenticator = authenticator  # None: auth is off, everyone is NOBODY

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.authenticator is None:
            state["principal"] = NOBODY
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        streaming = scope["type"] == "websocket" or scope["path"].endswith("/events")
        credentials = credentials_from(headers, query, token_in_query=streaming)
        try:
            principal = None if credentials.malformed else await self.authenticator.identify(credentials)
        except TransientError as exc:  # Redis away: the key cannot be checked now
            await _refuse(scope, receive, send, f"cannot check credentials now: {exc}", "", status=503)
            return
        if principal is None:
            presented = credentials.bearer is not None or credentials.basic is not None or credentials.malformed
            signed = (scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and "signature" in query
                      and self.SIGNED_PATHS.match(scope["path"]) is not None)
            open_path = scope["path"] in self.OPEN_PATHS or (scope["type"] == "http"
                                                             and scope["path"].startswith(self.OPEN_PREFIX))
            if presented or not (open_path or signed):
                # with an admin user, browsers get the basic challenge too, and ask for a user and password
                challenge = 'Bearer realm="comfyart"' + (', Basic realm="comfyart"'
                                                         if self.authenticator.admin_user else "")
                await _refuse(scope, receive, send, "invalid or revoked credentials" if presented
                              else "authentication required: send Authorization: Bearer <API key>", challenge)
                return
        state["principal"] = principal
        await self.app(scope, receive, send)


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, detail: str, challenge: str,
                  status: int = 401) -> None:
    if scope["type"] == "websocket":
        # closing before accepting answers the upgrade with HTTP 403
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"www-authenticate", challenge.encode()) if status == 401 else (b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------------- in routes
def principal_of(connection: HTTPConnection) -> Principal:
    """The Principal the middleware found."""
    principal: Principal | None = connection.scope.get("state", {}).get("principal")
    if principal is None:
        raise Unauthenticated("authentication required: send Authorization: Bearer <API key>")
    return principal


# The dependencies are coroutines though they never wait: FastAPI runs a plain function dependency in a worker
# thread, a thread hop on every request.
async def caller(connection: HTTPConnection) -> Principal:
    """A FastAPI dependency, for HTTP routes and WebSockets alike."""
    return principal_of(connection)


async def admin_only(connection: HTTPConnection) -> Principal:
    principal = principal_of(connection)
    if not principal.admin:
        raise Forbidden("this needs an admin key")
    return principal


class Unauthenticated(Exception):
    pass


Caller = Annotated[Principal, Depends(caller)]  # a route parameter: who calls
AdminCaller = Annotated[Principal, Depends(admin_only)]  # the same, refused (403) unless an admin
