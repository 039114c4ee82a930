"""Wall-clock time as comfyart records it: whole milliseconds since the UNIX epoch (``*_ms`` fields)."""
from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
