"""The real redis-server the tests start (the ``redis_server`` fixture, and tests that stop one on purpose)."""
from __future__ import annotations

import os
import shutil


def redis_server_binary() -> str:
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
