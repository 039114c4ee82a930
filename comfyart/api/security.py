"""What the API knows of security: who may call (an Authenticator, or none when auth is off), quotas, input
limits, and how output links are signed; built once from the configuration."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from loguru import logger

from comfyart.api.auth import Authenticator
from comfyart.auth import config_keys, output_path, signed_query
from comfyart.config.sections import LimitsConfig
from comfyart.config.settings import Settings
from comfyart.store.api_keys import KeyStore
from comfyart.store.quotas import Quotas
from comfyart.store.sessions import SessionStore
from comfyart.store.stores import Stores


@dataclass
class Security:
    """Auth and input limits. The default is auth off: everyone is one admin, as on a loopback workstation."""

    authenticator: Authenticator | None = None
    keys: KeyStore | None = None
    quotas: Quotas | None = None
    url_secret: bytes = b""
    signed_url_ttl_s: int = 24 * 3600
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    private_webhooks: bool = False  # whether client keys' webhooks may reach private addresses
    public_url: str | None = None  # server.public_url: links are made under it (behind a proxy)

    def output_url(self, base: str, task_id: str, filename: str, ttl_s: int | None = None,
                   now: float | None = None) -> tuple[str, int]:
        """A URL of an output that works without a key until it expires: (url, expires as a UNIX time)."""
        path = output_path(task_id, filename)
        expires = int((now if now is not None else time.time()) + (ttl_s or self.signed_url_ttl_s))
        return f"{base}{path}?{signed_query(self.url_secret, path, expires)}", expires


async def build_security(settings: Settings, stores: Stores) -> Security:
    """Auth and limits as configured; with auth on, the configured keys and the admin user besides the keys in Redis."""
    auth = settings.auth
    keys = stores.api_keys
    public_url = settings.server.public_base() if settings.server.public_url else None
    secret = auth.url_secret.get_secret_value().encode() if auth.url_secret else await keys.url_secret()
    if not auth.active:
        logger.warning("auth is OFF: every caller is an admin (server.host={}); configure auth.keys or "
                       "auth.admin_user before exposing this daemon", settings.server.host)
        return Security(url_secret=secret, signed_url_ttl_s=auth.signed_url_ttl_s, limits=settings.limits,
                        public_url=public_url)
    admin_user = (auth.admin_user, auth.admin_password.get_secret_value()) \
        if auth.admin_user and auth.admin_password else None
    sessions = SessionStore(stores.client, stores.keys, ttl_s=auth.session_ttl_s)
    authenticator = Authenticator(keys, config_keys=config_keys(auth), admin_user=admin_user, sessions=sessions)
    logger.info("auth on config_keys={} run_time_keys={} admin_user={}", len(auth.keys), len(await keys.records()),
                "yes" if admin_user else "no")
    return Security(authenticator=authenticator, keys=keys,
                    quotas=stores.quotas(auth.quotas), url_secret=secret,
                    signed_url_ttl_s=auth.signed_url_ttl_s, limits=settings.limits,
                    private_webhooks=settings.webhooks.allow_private_targets, public_url=public_url)
