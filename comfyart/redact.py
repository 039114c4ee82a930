"""Secrets out of what comfyart writes: logs, error messages, ``/api/pool``."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with any password (``redis://:pw@host``, ``https://user:pw@host``) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}" if user else f":{HIDDEN}@{host}"))
