"""``GET /api/cluster/peer/files/{kind}/{name}``: a file this replica holds, for another replica of the cluster
(``cluster.peers``; issue 24). Not an API route: no key opens it; the caller shows the cluster's secret in
``X-Comfyart-Peer`` (compared in constant time), a secret only replicas read (from Redis). It answers from this
replica's own stores (and its cache, for files named by their content), never by asking further: a file no
replica has cannot send requests around the cluster. One process (no locator) answers 404 to everything."""
from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from comfyart.api.deps import Services, ServicesDep
from comfyart.cluster.peers import PEER_FILES_PATH, PEER_HEADER
from comfyart.files.cache import relpath

router = APIRouter(include_in_schema=False)


def secret_matches(given: str | None, secret: str) -> bool:
    """Whether a request shows the cluster's secret; constant time, an absent or empty one never matches."""
    return bool(given) and bool(secret) and hmac.compare_digest(str(given).encode(), secret.encode())


async def held_here(services: Services, kind: str, name: str) -> Path | None:
    """The file from this replica's own stores (or its cache, for inputs and blobs), without asking any peer."""
    if kind == "inputs":
        path = services.inputs.path(name)
    elif kind == "blobs":
        path = await services.blobs.hold(name) if services.blobs is not None else None
    else:
        task_id, _, filename = name.partition("/")
        return services.outputs.find(task_id, filename)
    if path is None and services.files is not None:
        path = await services.files.cache.get(kind, name)
    return path


@router.get(PEER_FILES_PATH + "/{kind}/{name:path}", response_model=None)
async def peer_file(kind: str, name: str, request: Request, services: ServicesDep) -> Response:
    locator = services.files
    if locator is None:
        return JSONResponse({"detail": "no such file"}, status_code=404)
    if not secret_matches(request.headers.get(PEER_HEADER), locator.peers.secret):
        return JSONResponse({"detail": f"refused: {PEER_HEADER} does not hold this cluster's secret"},
                            status_code=403)
    path = await held_here(services, kind, name) if relpath(kind, name) is not None else None
    if path is None:
        return JSONResponse({"detail": "no such file"}, status_code=404)
    return FileResponse(path, media_type="application/octet-stream")
