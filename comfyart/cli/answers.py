"""How the remote commands read the daemon's answers: the JSON of a 2xx answer, or ``CommandFailed`` with the
daemon's one-line reason and the command's exit status."""
from __future__ import annotations

from typing import Any

import httpx

from comfyart.cli.render import printable


class CommandFailed(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def answer(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; otherwise CommandFailed with the daemon's one-line reason."""
    if response.status_code >= 300:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        raise CommandFailed(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}"
                            + (f": {printable(detail)}" if detail else ""))
    try:
        return response.json() if response.content else None
    except ValueError:
        raise CommandFailed(f"{response.request.method} {response.request.url}: the answer is not JSON "
                            "(is that a comfyart daemon?)") from None
