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

from comfyart.api.v2.errors import error_body, is_v2
from comfyart.auth import (
    EDITOR_PATH,
    NOBODY,
    SESSION_COOKIE,
    SIGNIN_PATH,
    SIGNOUT_PATH,
    UNSAFE_METHODS,
    Credentials,
    KeyRecord,
    Principal,
    Role,
    SessionKind,
    SessionRef,
    cookie_value,
    credentials_from,
    hash_key,
    key_id_of,
    origin_allowed,
    password_fingerprint,
)
from comfyart.errors import Forbidden, TransientError
from comfyart.store.api_keys import KeyStore
from comfyart.store.sessions import SessionStore


class Authenticator:
    """Turns presented credentials into a Principal, or None when they are wrong, revoked or absent."""

    def __init__(self, keys: KeyStore, *, config_keys: Sequence[KeyRecord] = (),
                 admin_user: tuple[str, str] | None = None, sessions: SessionStore | None = None) -> None:
        self.keys = keys
        self.config_keys = {record.sha256: record for record in config_keys}
        self.admin_user = admin_user
        self.sessions = sessions  # None: no browser sessions
        # computed once: scrypt is slow on purpose
        self.admin_fingerprint = password_fingerprint(*admin_user) if admin_user else None

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
        return None if key_id is None else await self._run_time_key(key_id, digest)

    async def sign_in(self, credentials: Credentials) -> tuple[Principal, str] | None:
        """A new browser session for valid ``credentials``: (who, the session's token), or None."""
        principal = await self.identify(credentials)
        if principal is None or self.sessions is None:
            return None
        return principal, await self.sessions.create(self._session_ref(principal, credentials))

    def _session_ref(self, principal: Principal, credentials: Credentials) -> SessionRef:
        if credentials.basic is not None:
            return SessionRef(SessionKind.ADMIN_USER, user=principal.name, fingerprint=self.admin_fingerprint)
        digest = hash_key(credentials.bearer or "")
        if digest in self.config_keys:
            return SessionRef(SessionKind.CONFIG_KEY, sha256=digest)
        return SessionRef(SessionKind.API_KEY, key_id=principal.id, sha256=digest)

    async def identify_session(self, token: str) -> Principal | None:
        """Who a session cookie names, while the credential it was opened with still holds (checked on each
        use: a key revoked, or a configuration key or admin user removed, ends every session it opened)."""
        ref = await self.sessions.lookup(token) if self.sessions is not None else None
        if ref is None:
            return None
        if ref.kind is SessionKind.ADMIN_USER:
            if self.admin_user is None or self.admin_fingerprint is None or ref.user != self.admin_user[0]:
                return None
            return Principal(id=f"user:{ref.user}", name=ref.user, role=Role.ADMIN) \
                if hmac.compare_digest(ref.fingerprint or "", self.admin_fingerprint) else None
        if ref.kind is SessionKind.CONFIG_KEY:
            configured = self.config_keys.get(ref.sha256 or "")
            return configured.principal() if configured is not None else None
        return await self._run_time_key(ref.key_id or "", ref.sha256 or "")

    async def _run_time_key(self, key_id: str, digest: str) -> Principal | None:
        try:
            record = await self.keys.get(key_id)
        except (ValueError, KeyError):  # a record that does not decode is no valid key
            logger.warning("unreadable key record key_id={}", key_id)
            return None
        if record is None or record.revoked_ms is not None or not hmac.compare_digest(record.sha256, digest):
            return None
        return record.principal()


# ---------------------------------------------------------------------------------------------------- middleware
V2_HEALTH_PATH = "/api/v2/health"
V2_REFUSAL_CODES = {401: "unauthorized", 403: "forbidden", 503: "upstream_unreachable"}  # the middleware's statuses
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class AuthMiddleware:
    """Puts the caller's Principal in ``scope["state"]["principal"]`` and turns away anyone without valid
    credentials, except on ``/healthz``, the dashboard's files (``/`` and ``/ui/…``: they hold no data, and the page
    asks for a key), the sign-in page, and a GET that carries a URL signature (its route checks it). A browser
    signed in at ``/comfy/signin`` is named by its session cookie when it sends no Authorization; such a request
    that changes something (or opens a WebSocket) from another site's page is refused. Routes then only decide what
    the Principal may do."""

    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", SIGNIN_PATH, SIGNOUT_PATH, V2_HEALTH_PATH})
    OPEN_PREFIX = "/ui/"
    PEER_PREFIX = "/api/cluster/peer/files/"  # other replicas: the route checks the cluster's secret (api.peer)
    SIGNED_PATHS = re.compile(r"^/api/tasks/[^/]+/outputs/[^/]+$")
    EDITOR_PAGES = frozenset({"/comfy", EDITOR_PATH})  # a browser without a session is sent to sign in

    def __init__(self, app: ASGIApp, authenticator: Authenticator | None, public_url: str | None = None) -> None:
        self.app = app
        self.authenticator = authenticator  # None: auth is off, everyone is NOBODY
        self.public_url = public_url  # a browser's Origin may name it (behind a proxy that rewrites the Host)

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
        presented = credentials.bearer is not None or credentials.basic is not None or credentials.malformed
        session = None if presented else cookie_value(headers.get("cookie"), SESSION_COOKIE)
        if (session is not None or scope["path"] in (SIGNIN_PATH, SIGNOUT_PATH)) and self._cross_site(scope, headers):
            await _refuse(scope, receive, send, "refused: a request from another site's page (its Origin is not "
                                                "this server)", "", status=403)
            return
        try:
            principal = await self._identify(credentials, session)
        except TransientError as exc:  # Redis away: the key cannot be checked now
            await _refuse(scope, receive, send, f"cannot check credentials now: {exc}", "", status=503)
            return
        if principal is None and not self._may_pass(scope, query, presented):
            await self._turn_away(scope, receive, send, presented, session is not None)
            return
        state["principal"] = principal
        await self.app(scope, receive, send)

    async def _identify(self, credentials: Credentials, session: str | None) -> Principal | None:
        assert self.authenticator is not None
        if credentials.malformed:
            return None
        if session is not None:
            return await self.authenticator.identify_session(session)
        return await self.authenticator.identify(credentials)

    def _cross_site(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        """Whether a browser sent this state-changing request (or WebSocket) from another site's page."""
        changes = scope["type"] == "websocket" or scope["method"] in UNSAFE_METHODS
        origin = headers.get("origin")
        return changes and origin is not None and not origin_allowed(origin, headers.get("host"), self.public_url)

    def _may_pass(self, scope: dict[str, Any], query: dict[str, list[str]], presented: bool) -> bool:
        """Whether a request nobody was found for still reaches its route (which then answers it or checks it)."""
        if presented:
            return False
        signed = (scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and "signature" in query
                  and self.SIGNED_PATHS.match(scope["path"]) is not None)
        return signed or scope["path"] in self.OPEN_PATHS or (
            scope["type"] == "http" and scope["path"].startswith((self.OPEN_PREFIX, self.PEER_PREFIX)))

    async def _turn_away(self, scope: dict[str, Any], receive: Any, send: Any, presented: bool,
                         had_session: bool) -> None:
        assert self.authenticator is not None
        if (not presented and scope["type"] == "http" and scope["method"] in ("GET", "HEAD")
                and scope["path"] in self.EDITOR_PAGES):
            # a person opening the editor: to the sign-in page, and back here after
            await _redirect(send, f"{SIGNIN_PATH}?next={EDITOR_PATH}")
            return
        # with an admin user, browsers get the basic challenge too, and ask for a user and password; not the
        # editor's requests, nor a browser whose session ended: the sign-in page asks, not the browser's own box
        basic = (self.authenticator.admin_user and not had_session
                 and not scope["path"].startswith(EDITOR_PATH))
        challenge = 'Bearer realm="comfyart"' + (', Basic realm="comfyart"' if basic else "")
        detail = ("invalid or revoked credentials" if presented
                  else f"session expired or ended: sign in again at {SIGNIN_PATH}" if had_session
                  else "authentication required: send Authorization: Bearer <API key>")
        await _refuse(scope, receive, send, detail, challenge)


async def _redirect(send: Any, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, detail: str, challenge: str,
                  status: int = 401) -> None:
    if scope["type"] == "websocket":
        # closing before accepting answers the upgrade with HTTP 403
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    body = json.dumps(_refusal_body(scope["path"], status, detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", challenge.encode()))
    elif status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refusal_body(path: str, status: int, detail: str) -> dict[str, Any]:
    """FastAPI's ``{"detail"}``, or on Comfy API v2's paths its envelope (``api.v2.errors``)."""
    if not is_v2(path):
        return {"detail": detail}
    return error_body(V2_REFUSAL_CODES.get(status, "unauthorized"), detail)


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
