"""Who is calling: API keys with roles, the basic-auth admin user, signed output URLs.

A key is ``ca_<id>_<secret>``. Keys made at run time (CLI, admin endpoint) live in Redis as a record holding only
the key's SHA-256, so a dump of Redis gives no key away; they are found by their id and compared in constant time.
Keys from the configuration are held in memory, by their SHA-256, under the id ``config:<name>``. The id of the
caller is the ``owner`` of every task it queues: a client sees only its own.

Redis keys (``P`` is the configured prefix):
    P:keys          hash: key id -> JSON record (name, role, sha256, created_ms, revoked_ms, quotas)
    P:url-secret    string: the secret output URLs are signed with, made once when the config gives none
"""
from __future__ import annotations

import base64
import builtins
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import redis.asyncio as aioredis
from fastapi import Depends
from loguru import logger
from starlette.requests import HTTPConnection

from .errors import Forbidden, NotFound, TransientError
from .store import map_redis_errors

KEY_PREFIX = "ca_"
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEY_ID_LENGTH = 12


class Role(enum.StrEnum):
    ADMIN = "admin"  # the pool, scaling, workflows, keys, every task
    CLIENT = "client"  # its own tasks and outputs; runs workflows


@dataclass(frozen=True)
class Principal:
    id: str  # written as the owner of the tasks it queues
    name: str
    role: Role
    max_queued: int | None = None  # None: the configured default
    submissions_per_minute: float | None = None
    authenticated: bool = True  # False only when auth is off: everyone is this one admin, owner of nothing

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def owner(self) -> str | None:
        """What goes in a task's ``owner`` field: nothing when auth is off, so all tasks share one view."""
        return self.id if self.authenticated else None


NOBODY = Principal(id="", name="anonymous", role=Role.ADMIN, authenticated=False)


def can_see(principal: Principal, owner: str | None) -> bool:
    """Whether ``principal`` may read or act on a task (or output) owned by ``owner``."""
    return principal.admin or (owner is not None and owner == principal.id)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``: 60 bits of id to find it, 256 bits of secret."""
    key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside a key of the ``ca_<id>_<secret>`` shape, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX):].partition("_")
    if not sep or not secret or len(key_id) != KEY_ID_LENGTH or not set(key_id) <= set(KEY_ID_ALPHABET):
        return None
    return key_id


# ---------------------------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class Credentials:
    bearer: str | None = None
    basic: tuple[str, str] | None = None
    malformed: bool = False  # an Authorization header that is neither scheme, or undecodable


def credentials_from(headers: Mapping[str, str], query: Mapping[str, Sequence[str]], *,
                     token_in_query: bool) -> Credentials:
    """What a request presents: ``Authorization: Bearer KEY`` or ``Basic``, ``X-API-Key: KEY``, or (where the
    caller cannot set headers: WebSockets, EventSource) a ``token`` query parameter."""
    header = headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return Credentials(bearer=value)
        if scheme.lower() == "basic" and value:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return Credentials(malformed=True)
            return Credentials(basic=(user, password)) if sep else Credentials(malformed=True)
        return Credentials(malformed=True)
    if headers.get("x-api-key"):
        return Credentials(bearer=headers["x-api-key"].strip())
    if token_in_query and query.get("token"):
        return Credentials(bearer=query["token"][0])
    return Credentials()


# ---------------------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    role: Role
    sha256: str
    created_ms: int
    revoked_ms: int | None = None
    max_queued: int | None = None
    submissions_per_minute: float | None = None
    source: str = "redis"  # or "config"

    def principal(self) -> Principal:
        return Principal(id=self.id, name=self.name, role=self.role, max_queued=self.max_queued,
                         submissions_per_minute=self.submissions_per_minute)

    def describe(self) -> dict[str, Any]:
        """What an admin may see of a key: never its hash."""
        return {"id": self.id, "name": self.name, "role": self.role.value, "created_ms": self.created_ms,
                "revoked_ms": self.revoked_ms, "max_queued": self.max_queued,
                "submissions_per_minute": self.submissions_per_minute, "source": self.source}

    def encode(self) -> str:
        return json.dumps({"name": self.name, "role": self.role.value, "sha256": self.sha256,
                           "created_ms": self.created_ms, "revoked_ms": self.revoked_ms,
                           "max_queued": self.max_queued, "submissions_per_minute": self.submissions_per_minute})

    @classmethod
    def decode(cls, key_id: str, raw: str) -> KeyRecord:
        data = json.loads(raw)
        return cls(id=key_id, name=data["name"], role=Role(data["role"]), sha256=data["sha256"],
                   created_ms=data["created_ms"], revoked_ms=data.get("revoked_ms"),
                   max_queued=data.get("max_queued"), submissions_per_minute=data.get("submissions_per_minute"))


class KeyStore:
    """API keys made at run time, in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.key = f"{prefix}:keys"
        self.secret_key = f"{prefix}:url-secret"

    async def create(self, name: str, role: Role, *, max_queued: int | None = None,
                     submissions_per_minute: float | None = None) -> tuple[KeyRecord, str]:
        """A new key: its record, and the key itself, which is shown this once and stored nowhere."""
        while True:
            key_id, key = new_key()
            record = KeyRecord(id=key_id, name=name, role=role, sha256=hash_key(key),
                               created_ms=int(time.time() * 1000), max_queued=max_queued,
                               submissions_per_minute=submissions_per_minute)
            with map_redis_errors():
                if await self.redis.hsetnx(self.key, key_id, record.encode()):
                    return record, key

    async def get(self, key_id: str) -> KeyRecord | None:
        with map_redis_errors():
            raw = await self.redis.hget(self.key, key_id)
        return KeyRecord.decode(key_id, raw) if raw else None

    async def list(self) -> builtins.list[KeyRecord]:
        with map_redis_errors():
            raw = await self.redis.hgetall(self.key)
        return sorted((KeyRecord.decode(k, v) for k, v in raw.items()), key=lambda r: r.created_ms)

    async def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept, so the owner of its tasks still has a name); revoking twice is harmless."""
        record = await self.get(key_id)
        if record is None:
            raise NotFound(f"no key {key_id}")
        if record.revoked_ms is None:
            record = KeyRecord(**{**record.__dict__, "revoked_ms": int(time.time() * 1000)})
            with map_redis_errors():
                await self.redis.hset(self.key, key_id, record.encode())
        return record

    async def url_secret(self) -> bytes:
        """The secret output URLs are signed with: made once and kept, so links survive restarts."""
        with map_redis_errors():
            await self.redis.set(self.secret_key, secrets.token_hex(32), nx=True)
            return bytes.fromhex(await self.redis.get(self.secret_key))


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


# ---------------------------------------------------------------------------------------------------- signed URLs
def output_path(task_id: str, filename: str) -> str:
    """The REST path of a task's output file: what a link is signed over."""
    return f"/api/tasks/{task_id}/outputs/{quote(filename)}"


def url_signature(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(secret: bytes, path: str, expires: int) -> str:
    return f"expires={expires}&signature={url_signature(secret, path, expires)}"


def signature_valid(secret: bytes, path: str, expires: Any, signature: Any, now: float) -> bool:
    """Whether ``?expires=…&signature=…`` on ``path`` was made with ``secret`` and has not expired."""
    if not isinstance(expires, str) or not expires.isdigit() or len(expires) > 12 or not isinstance(signature, str):
        return False
    if int(expires) < now:
        return False
    return hmac.compare_digest(url_signature(secret, path, int(expires)), signature)


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
    principal = connection.scope.get("state", {}).get("principal")
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
