"""Browser sessions, in Redis: a session cookie's SHA-256 names the credential a person signed in with, until it
expires (``auth.session_ttl_s``) or is ended by signing out. The key is in ``store.keys``."""
from __future__ import annotations

import redis.asyncio as aioredis
from loguru import logger

from comfyart.auth import SessionRef, new_session_token, session_token_digest
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text


class SessionStore:
    """Sessions opened by the sign-in page: only their tokens' digests are kept."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    async def create(self, ref: SessionRef) -> str:
        """A new session standing for ``ref``: its token, which goes in the cookie and is stored nowhere."""
        while True:
            token = new_session_token()
            with map_redis_errors():
                if await self.redis.set(self.keys.session(session_token_digest(token)), ref.encode(), nx=True,
                                        ex=self.ttl_s):
                    return token

    async def lookup(self, token: str) -> SessionRef | None:
        """What the session of ``token`` stands for; None when unknown, expired or ended."""
        with map_redis_errors():
            raw = await self.redis.get(self.keys.session(session_token_digest(token)))
        if raw is None:
            return None
        try:
            return SessionRef.decode(text(raw))
        except (ValueError, KeyError, TypeError):  # a value that does not decode opens nothing
            logger.warning("unreadable session record")
            return None

    async def delete(self, token: str) -> None:
        with map_redis_errors():
            await self.redis.delete(self.keys.session(session_token_digest(token)))
