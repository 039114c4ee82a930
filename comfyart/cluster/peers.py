"""One replica asking another for a file it holds (issue 24): ``GET {url}/api/cluster/peer/files/{kind}/{name}``
with the cluster's secret in ``X-Comfyart-Peer`` (``store.files.FileIndex.secret``), the answer streamed into the
file cache (``files.cache.FileCache``), never whole in memory. The route is ``api.peer``."""
from __future__ import annotations

import enum
from pathlib import Path
from urllib.parse import quote

import httpx
from loguru import logger

from comfyart.files.cache import FileCache

PEER_HEADER = "X-Comfyart-Peer"
PEER_FILES_PATH = "/api/cluster/peer/files"
CONNECT_TIMEOUT_S = 2.0  # a replica on the LAN answers at once; one that does not is down
READ_TIMEOUT_S = 60.0  # between two chunks of a large output


class Miss(enum.Enum):
    """Why a peer gave no copy: it answered that it has none, or it could not be reached (or refused us)."""

    ABSENT = "absent"
    UNREACHABLE = "unreachable"


def peer_file_url(base_url: str, kind: str, name: str) -> str:
    return f"{base_url.rstrip('/')}{PEER_FILES_PATH}/{kind}/{quote(name, safe='/')}"


class PeerClient:
    """Fetches files from other replicas into ``cache``. ``aclose`` closes its connections."""

    def __init__(self, cache: FileCache, secret: str) -> None:
        self.cache = cache
        self.secret = secret
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                                      trust_env=False)  # replicas speak to each other directly, never via a proxy

    async def fetch(self, base_url: str, kind: str, name: str) -> Path | Miss:
        """The cached copy of the peer's file, or why there is none."""
        url = peer_file_url(base_url, kind, name)
        try:
            async with self.http.stream("GET", url, headers={PEER_HEADER: self.secret}) as response:
                if response.status_code == 404:
                    return Miss.ABSENT
                if response.status_code != 200:
                    logger.warning("peer refused a file url={} status={}", url, response.status_code)
                    return Miss.UNREACHABLE
                return await self.cache.put(kind, name, response.aiter_bytes())
        except httpx.HTTPError as exc:
            logger.warning("peer file fetch failed url={} error={}", url, exc or type(exc).__name__)
            return Miss.UNREACHABLE

    async def aclose(self) -> None:
        await self.http.aclose()
