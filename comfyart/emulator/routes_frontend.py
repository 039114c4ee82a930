"""What ComfyUI's web editor asks besides the queue (shared/comfyui/FRONTEND.md section 1): node packs' web
extensions (``/extensions``, and each pack's files at ``/extensions/<pack>/…`` as ComfyUI serves
EXTENSION_WEB_DIRS), templates, i18n, the model browser's ``/experiment/models``, ``/view_metadata``, the newest
server's ``/global_subgraphs`` and ``/node_replacements``, and the frontend-only ``/internal/*``.

``routes`` are mirrored under /api like ComfyUI's; ``static`` (extensions, templates, a pack's example workflows)
and ``internal`` (a sub-application in ComfyUI) are not.
"""
from __future__ import annotations

import glob
import json
import os
import struct
import urllib.parse

from aiohttp import web

from comfyart.emulator import frontend_assets as assets
from comfyart.emulator.engine import EMULATOR, Emulator
from comfyart.emulator.inventory import MODEL_FOLDERS

routes = web.RouteTableDef()
static = web.RouteTableDef()
internal = web.RouteTableDef()
_JS = "application/javascript"
_SAFETENSORS_HEADER_MAX = 1 << 20  # comfy.utils.safetensors_header(max_size=1024*1024)


def pack_dirs(emu: Emulator) -> dict[str, str]:
    return dict(emu.flavour.extensions)


def extension_paths(emu: Emulator) -> list[str]:
    """server.py ``get_extensions``: every .js file under each pack's web folder, as the URL it is served at."""
    paths = []
    if emu.flavour.demo_pack:
        paths += [f"/extensions/{assets.DEMO_PACK}/{name}" for name in assets.DEMO_PACK_FILES]
    for name, folder in pack_dirs(emu).items():
        files = sorted(glob.glob(os.path.join(glob.escape(folder), "**/*.js"), recursive=True))
        paths += [f"/extensions/{urllib.parse.quote(name)}/" + os.path.relpath(f, folder).replace(os.sep, "/")
                  for f in files]
    return paths


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    return web.json_response(extension_paths(request.app[EMULATOR]))


@static.get("/extensions/{pack}/{path:.*}")
async def extension_file(request: web.Request) -> web.StreamResponse:
    emu, pack, path = request.app[EMULATOR], request.match_info["pack"], request.match_info["path"]
    if pack == assets.DEMO_PACK and emu.flavour.demo_pack:
        text = assets.DEMO_PACK_FILES.get(path)
        return web.Response(text=text, content_type=_JS) if text is not None else web.Response(status=404)
    folder = pack_dirs(emu).get(pack)
    if folder is None:
        return web.Response(status=404)
    root = os.path.abspath(folder)
    target = os.path.abspath(os.path.join(root, path))
    if os.path.commonpath([root, target]) != root or not os.path.isfile(target):
        return web.Response(status=404)
    headers = {"Content-Type": _JS} if target.endswith((".js", ".mjs")) else None
    return web.FileResponse(target, headers=headers)


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    """custom_node_manager: each pack's example workflows by name."""
    demo = request.app[EMULATOR].flavour.demo_pack
    return web.json_response({assets.DEMO_PACK: list(assets.DEMO_PACK_WORKFLOWS)} if demo else {})


@static.get("/api/workflow_templates/{pack}/{name}.json")
async def pack_workflow(request: web.Request) -> web.Response:
    workflow = assets.DEMO_PACK_WORKFLOWS.get(request.match_info["name"])
    demo = request.app[EMULATOR].flavour.demo_pack
    if request.match_info["pack"] != assets.DEMO_PACK or workflow is None or not demo:
        return web.Response(status=404)
    return web.json_response(workflow)


@static.get("/templates/{name}.json")
async def template(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "index":
        return web.json_response(assets.TEMPLATE_INDEX)
    workflow = assets.TEMPLATES.get(name)
    return web.json_response(workflow) if workflow is not None else web.Response(status=404)


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    return web.json_response({})  # custom_node_manager: the packs' locales/ (none of ours has one)


def _newest_only(emu: Emulator) -> web.Response | None:
    """A route the newest server has and 0.3.64 does not: there, 404 with an empty body like any unknown route."""
    return None if emu.flavour.newest else web.Response(status=404, content_type="application/octet-stream")


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    return _newest_only(request.app[EMULATOR]) or web.json_response({})  # subgraph_manager: no pack has blueprints


@routes.get("/global_subgraphs/{subgraph_id}")
async def global_subgraph(request: web.Request) -> web.Response:
    return _newest_only(request.app[EMULATOR]) or web.Response(status=404)


@routes.get("/node_replacements")
async def node_replacements(request: web.Request) -> web.Response:
    return _newest_only(request.app[EMULATOR]) or web.json_response({})  # node_replace_manager: none registered


def _folder_paths(emu: Emulator) -> dict[str, list[str]]:
    return {folder: [os.path.join(emu.models_dir, folder)] for folder in MODEL_FOLDERS}


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    """model_manager ``get_model_folders``: every model folder but configs and custom_nodes."""
    paths = _folder_paths(request.app[EMULATOR])
    return web.json_response([{"name": name, "folders": folders} for name, folders in paths.items()
                              if name not in ("configs", "custom_nodes")])


@routes.get("/experiment/models/{folder}")
async def experiment_models_in(request: web.Request) -> web.Response:
    emu, folder = request.app[EMULATOR], request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    files = []
    for name in emu.models[folder]:
        path = os.path.join(emu.models_dir, folder, name)
        try:
            stat = os.stat(path)
        except OSError:
            continue
        files.append({"name": name, "pathIndex": 0, "modified": stat.st_mtime, "created": stat.st_ctime,
                      "size": stat.st_size})
    return web.json_response(files)


def safetensors_metadata(path: str) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file's header, or None (no such file, not safetensors, none)."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                return None
            length = struct.unpack("<Q", prefix)[0]
            if length > _SAFETENSORS_HEADER_MAX:
                return None
            header = json.loads(file.read(length))
    except (OSError, ValueError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


@routes.get("/view_metadata/{folder}")
async def view_metadata(request: web.Request) -> web.Response:
    emu, folder = request.app[EMULATOR], request.match_info["folder"]
    filename = request.query.get("filename", "")
    if folder not in MODEL_FOLDERS or not filename.endswith(".safetensors") or filename not in emu.models[folder]:
        return web.Response(status=404)
    metadata = safetensors_metadata(os.path.join(emu.models_dir, folder, filename))
    return web.json_response(metadata) if metadata is not None else web.Response(status=404)


@internal.get("/internal/logs")
async def logs(request: web.Request) -> web.Response:
    return web.json_response("")


@internal.get("/internal/logs/raw")
async def logs_raw(request: web.Request) -> web.Response:
    return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})


@internal.patch("/internal/logs/subscribe")
async def logs_subscribe(request: web.Request) -> web.Response:
    return web.Response(status=200)


@internal.get("/internal/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    return web.json_response(_folder_paths(request.app[EMULATOR]))


@internal.get("/internal/files/{kind}")
async def internal_files(request: web.Request) -> web.Response:
    """internal_routes ``get_files``: the folder's files, newest first."""
    base = request.app[EMULATOR].folders().get(request.match_info["kind"])
    if base is None:
        return web.json_response({"error": "Invalid directory type"}, status=400)
    entries = sorted((e for e in os.scandir(base) if e.is_file()), key=lambda e: -e.stat().st_mtime)
    return web.json_response([entry.name for entry in entries])
