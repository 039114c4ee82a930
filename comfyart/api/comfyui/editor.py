"""ComfyUI's own web editor at ``/comfy/``: its files from the ``comfyui-frontend-package`` wheel (installed with
comfyart, never copied into it). The page takes its API base from its own path, so it asks ``/comfy/api/...`` and
``/comfy/ws``, which ``build_router`` serves as it serves the root."""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

EDITOR_PREFIX = "/comfy"
# the editor's own extensions, bundled with it; any other /comfy/extensions/<pack>/ is a node pack's, from a backend
BUNDLED_EXTENSIONS = "extensions/core"
ROOT_IMAGES = "assets/images"
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
HASHED = "public, max-age=31536000, immutable"  # the build names every asset by its content


@functools.cache
def frontend_files() -> Path | None:
    """The wheel's ``static`` folder; None when the package is not installed (the editor is then not served)."""
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "index.html").is_file() else None


class EditorFiles(StaticFiles):
    """The page's files: revalidated each time (``no-cache``), except the content-named ``assets/``."""

    def __init__(self, directory: Path, *, hashed: bool) -> None:
        super().__init__(directory=directory)
        self.cache_control = HASHED if hashed else "no-cache"

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = self.cache_control
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mounted_folders(static: Path) -> list[str]:
    """The folders served as they are: each top-level one but ``extensions``, of which only the bundled part."""
    folders = sorted(p.name for p in static.iterdir() if p.is_dir() and p.name != "extensions")
    return folders + ([BUNDLED_EXTENSIONS] if (static / BUNDLED_EXTENSIONS).is_dir() else [])


def build_editor_router(static: Path) -> APIRouter:
    """``/comfy`` (redirected to ``/comfy/``, so the page's relative URLs resolve under it), the page itself (never
    cached: a new package version must reach the browser), its top-level files and its folders."""
    router = APIRouter(include_in_schema=False)
    for folder in mounted_folders(static):
        router.mount(f"{EDITOR_PREFIX}/{folder}", EditorFiles(static / folder, hashed=folder == "assets"))
    if (static / ROOT_IMAGES).is_dir():  # the page names a few images from the site's root (its favicon's frames)
        router.mount(f"/{ROOT_IMAGES}", EditorFiles(static / ROOT_IMAGES, hashed=False))
    page = (static / "index.html").read_bytes()

    async def editor_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def editor_root() -> Response:
        return RedirectResponse(f"{EDITOR_PREFIX}/", status_code=307)

    for method in ("GET", "HEAD"):
        router.add_api_route(f"{EDITOR_PREFIX}/", editor_page, methods=[method])
        router.add_api_route(f"{EDITOR_PREFIX}/index.html", editor_page, methods=[method])
        router.add_api_route(EDITOR_PREFIX, editor_root, methods=[method])
    for file in sorted(p.name for p in static.iterdir() if p.is_file() and p.name != "index.html"):
        for method in ("GET", "HEAD"):
            router.add_api_route(f"{EDITOR_PREFIX}/{file}", _one_file(static / file), methods=[method])
    return router


def _one_file(path: Path) -> Callable[[], Awaitable[Response]]:
    """The route of one top-level file of the package (e.g. ``materialdesignicons.min.css``)."""
    async def editor_file() -> Response:
        return FileResponse(path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
    return editor_file
