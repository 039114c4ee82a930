"""The HTTP app: ``create_app`` puts the services on ``app.state`` and adds the middlewares (body limits, then who
calls: routes only decide what that caller may do), the error handlers, and one router per resource."""
from __future__ import annotations

from fastapi import FastAPI
from loguru import logger

from comfyart import __version__
from comfyart.api import dashboard, events, inputs, inventory, keys, pool, scheduler, signin, system, tasks, workflows
from comfyart.api.auth import AuthMiddleware
from comfyart.api.cluster import router as cluster_router
from comfyart.api.comfyui.editor import build_editor_router, frontend_files
from comfyart.api.comfyui.routes import build_router
from comfyart.api.deps import Services
from comfyart.api.errors import add_error_handlers
from comfyart.api.limits import BodyLimit
from comfyart.api.peer import router as peer_router
from comfyart.api.v2 import assets as v2_assets
from comfyart.api.v2 import content as v2_content
from comfyart.api.v2 import events as v2_events
from comfyart.api.v2 import jobs as v2_jobs
from comfyart.api.v2 import listing as v2_listing


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="comfyart", version=__version__,
                  description="Elastic scheduler for fleets of ComfyUI backends")
    app.state.services = services
    security = services.security
    # outermost first: a body over its limit is refused before anyone is asked who sent it
    app.add_middleware(AuthMiddleware, authenticator=security.authenticator, public_url=security.public_url)
    app.add_middleware(BodyLimit, limits=security.limits, v2_upload_bytes=services.api_v2.max_upload_bytes)
    add_error_handlers(app)
    editor_files = frontend_files() if services.editor else None
    if editor_files is not None:  # first: its bundled extensions/core before the node packs' /comfy/extensions/...
        app.include_router(build_editor_router(editor_files))
    elif services.editor:
        logger.warning("ComfyUI's web editor is not served at /comfy/: the comfyui-frontend-package wheel is not "
                       "installed (pip install -r requirements.txt), or set comfyui.editor: false")
    for resource in (tasks, workflows, inputs, pool, inventory, scheduler, keys, events, signin):
        app.include_router(resource.router)
    for v2_resource in (v2_jobs, v2_listing, v2_events, v2_assets, v2_content):
        app.include_router(v2_resource.router)
    app.include_router(build_router())
    app.include_router(system.router)
    app.include_router(cluster_router)
    app.include_router(peer_router)
    if services.dashboard:
        app.include_router(dashboard.router)
    return app
