"""Who is calling, as pure rules: roles and principals, what a principal may see, API keys and their hashes, the
credentials a request presents, signed output URLs, and which auth configurations may serve where. No I/O: the
keys made at run time are kept by ``store.api_keys``, requests are checked by ``api.auth``.

A key is ``ca_<id>_<secret>``. Keys made at run time (CLI, admin endpoint) are kept as a record holding only the
key's SHA-256, so a dump of Redis gives no key away; they are found by their id and compared in constant time.
Keys from the configuration are held in memory, by their SHA-256, under the id ``config:<name>``. The id of the
caller is the ``owner`` of every task it queues: a client sees only its own.
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from comfyart.config.sections import AuthConfig

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


# ---------------------------------------------------------------------------------------------------- at start-up
def is_loopback(host: str) -> bool:
    """Whether a listen address only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_problem(auth: AuthConfig, host: str) -> str | None:
    """Why the daemon must not start with this auth configuration on ``host``, or None."""
    if auth.active or is_loopback(host) or auth.allow_unauthenticated:
        return None
    return (f"auth is off and server.host {host} is not a loopback address: anyone who can reach it would control "
            f"the pool. Configure auth (auth.keys or auth.admin_user), or set auth.allow_unauthenticated: true")


def config_keys(auth: AuthConfig) -> list[KeyRecord]:
    return [KeyRecord(id=f"config:{k.name}", name=k.name, role=Role(k.role),
                      sha256=k.key_sha256 or hash_key(k.key.get_secret_value() if k.key else ""), created_ms=0,
                      max_queued=k.max_queued, submissions_per_minute=k.submissions_per_minute, source="config")
            for k in auth.keys]


# ---------------------------------------------------------------------------------------------------- sessions
SESSION_COOKIE = "comfyart_session"
SIGNIN_PATH = "/comfy/signin"
SIGNOUT_PATH = "/comfy/signout"
EDITOR_PATH = "/comfy/"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SessionKind(enum.StrEnum):
    API_KEY = "api_key"  # a key made at run time: found by its id, its record re-read on each use
    CONFIG_KEY = "config_key"  # a key of the configuration, by its SHA-256
    ADMIN_USER = "admin_user"  # the basic-auth admin user, by name and a fingerprint of the password


@dataclass(frozen=True)
class SessionRef:
    """What a browser session stands for: the credential it was opened with, never the credential itself. The
    session holds only while that credential does (a key revoked, or gone from the configuration, ends it)."""

    kind: SessionKind
    key_id: str | None = None
    sha256: str | None = None
    user: str | None = None
    fingerprint: str | None = None

    def encode(self) -> str:
        fields = {"key_id": self.key_id, "sha256": self.sha256, "user": self.user, "fingerprint": self.fingerprint}
        return json.dumps({"kind": self.kind.value, **{k: v for k, v in fields.items() if v is not None}})

    @classmethod
    def decode(cls, raw: str) -> SessionRef:
        """Raises ValueError (or KeyError) when ``raw`` is not a session's value."""
        data = json.loads(raw)
        return cls(kind=SessionKind(data["kind"]), key_id=data.get("key_id"), sha256=data.get("sha256"),
                   user=data.get("user"), fingerprint=data.get("fingerprint"))


def password_fingerprint(user: str, password: str) -> str:
    """A slow hash of the admin password (scrypt, salted with the user): a session of the admin user ends when the
    password changes, and the copy in Redis gives the password away no faster than a brute-force search."""
    return hashlib.scrypt(password.encode(), salt=f"comfyart-session:{user}".encode(), n=1 << 14, r=8, p=1,
                          dklen=32).hex()


def session_token_digest(token: str) -> str:
    """What a session is stored under: a dump of Redis gives no cookie away."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def local_next(target: str | None) -> str:
    """Where to go after signing in: ``target`` when it is a path of the editor on this server, else the editor.
    Anything that a browser could read as another host (``//evil``, ``/\\evil``, a scheme, control characters)
    goes to the editor."""
    if not target or not target.startswith(EDITOR_PATH) or len(target) > 2000:
        return EDITOR_PATH
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return EDITOR_PATH
    return target


def session_cookie(token: str, *, max_age_s: int, secure: bool) -> str:
    """The Set-Cookie value of a session: out of scripts' reach (HttpOnly), never sent by another site's page
    (SameSite=Strict), on every path of the server (the editor's API and WebSocket, the REST API)."""
    return (f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}"
            + ("; Secure" if secure else ""))


def cleared_session_cookie(*, secure: bool) -> str:
    return session_cookie("", max_age_s=0, secure=secure)


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None (an empty value is none)."""
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value.strip():
            return value.strip().strip('"')
    return None


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _host_and_port(netloc: str) -> tuple[str, str]:
    """``(host, port)`` of ``host[:port]`` in lower case; the port empty when not written."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):  # an IPv6 literal
        host, _, rest = netloc.partition("]")
        return host + "]", rest.removeprefix(":")
    host, _, port = netloc.partition(":")
    return host, port


def origin_allowed(origin: str, host: str | None, also: str | None = None) -> bool:
    """Whether a browser's ``Origin`` is this server: the request's own ``Host``, or ``also``
    (``server.public_url``, for a proxy that rewrites the Host). A Host without a port matches on the name alone:
    the scheme a TLS-terminating proxy took off is not known here, and a page of the same host on another port is
    the same site to a browser anyway. ``null`` and anything unreadable are foreign."""
    scheme, sep, netloc = origin.strip().partition("://")
    if not sep or not netloc or "/" in netloc or scheme not in _DEFAULT_PORTS:
        return False
    name, port = _host_and_port(netloc)
    port = port or _DEFAULT_PORTS[scheme]
    if host:
        host_name, host_port = _host_and_port(host)
        if host_name == name and host_port in ("", port):
            return True
    if also:  # a URL: its scheme and port are known
        also_scheme, _, rest = also.partition("://")
        also_name, also_port = _host_and_port(rest.split("/", 1)[0])
        return (also_scheme == scheme and also_name == name
                and (also_port or _DEFAULT_PORTS.get(also_scheme, "")) == port)
    return False
