"""The dashboard: its page at ``/`` and its files under ``/ui`` (they live in ``comfyart/dashboard/``). Neither
holds data: the page signs in with a key, or asks a browser for the admin user first."""
from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.staticfiles import StaticFiles

from comfyart.api.deps import ServicesDep
from comfyart.api.routing import get_and_head

DASHBOARD_DIR = Path(__file__).parents[1] / "dashboard"
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                           "connect-src 'self' ws: wss:; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter()
router.mount("/ui", StaticFiles(directory=DASHBOARD_DIR), name="dashboard files")


@functools.cache
def page() -> bytes:
    """Read once: it is the same for every visit."""
    return (DASHBOARD_DIR / "index.html").read_bytes()


@get_and_head(router, "/", include_in_schema=False)
async def dashboard(request: Request, services: ServicesDep) -> Response:
    authenticator = services.security.authenticator
    if authenticator is not None and authenticator.admin_user and request.scope.get("state", {}).get(
            "principal") is None:
        # ask for the basic-auth user first: once given, the browser sends it with every request of the page, its
        # WebSocket included. The page comes with the 401, so a user with an API key who dismisses the prompt
        # still gets it, and signs in with the key.
        return Response(page(), status_code=401, media_type="text/html; charset=utf-8",
                        headers={**PAGE_HEADERS, "WWW-Authenticate": 'Basic realm="comfyart"'})
    return Response(page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
