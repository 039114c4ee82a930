"""Secrets out of what comfyart writes: logs, error messages, ``/api/pool``."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SENSITIVE_NAME = re.compile(r"(pass|secret|token|key|auth|credential)", re.IGNORECASE)
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


def redact_env(env: dict) -> dict:
    """Environment variables as shown: values of the ones whose names suggest a secret are hidden."""
    return {name: HIDDEN if SENSITIVE_NAME.search(name) else value for name, value in env.items()}
