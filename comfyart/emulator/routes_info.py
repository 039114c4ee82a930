"""What the server tells about itself, and the emulator's own controls: ``/object_info``, ``/system_stats``,
``/features``, ``/models``, ``/free``, the frontend's constant routes, and ``/emulator/control`` and
``/emulator/stats``.
"""
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from comfyart.emulator.answers import failure, json_object
from comfyart.emulator.engine import EMULATOR, Emulator
from comfyart.emulator.inventory import MODEL_FOLDERS
from comfyart.emulator.newest import server_features

routes = web.RouteTableDef()


@routes.post("/free")
async def free(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    body = await json_object(request)
    if body is None:
        return failure()
    if body.get("free_memory"):
        emu.cache.clear()
    if body.get("unload_models") or body.get("free_memory"):
        emu.loaded_model = None
    return web.Response(status=200)


def _input_files(emu: Emulator) -> list[str]:
    return sorted(f for f in os.listdir(emu.input_dir) if os.path.isfile(os.path.join(emu.input_dir, f)))


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    files, newest = _input_files(emu), emu.flavour.newest
    return web.json_response({name: spec.object_info(files, emu.models, newest=newest)
                              for name, spec in emu.nodes.items()})


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    name = request.match_info["node_class"]
    spec = emu.nodes.get(name)
    return web.json_response({name: spec.object_info(_input_files(emu), emu.models, newest=emu.flavour.newest)}
                             if spec else {})


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR].system_stats())


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(server_features(request.app[EMULATOR].flavour.newest))


@routes.get("/models")
async def models(request: web.Request) -> web.Response:
    return web.json_response(MODEL_FOLDERS)


@routes.get("/models/{folder}")
async def models_in(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    return web.json_response(request.app[EMULATOR].models[folder])


def _constant(value: Any) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(value)
    return handler


@routes.get("/userdata")
async def userdata(request: web.Request) -> web.Response:
    return web.Response(status=404, text="Directory not found")


for _path, _value in (("/embeddings", []), ("/settings", {}), ("/users", {"storage": "server", "migrated": True}),
                      ("/v2/userdata", [])):
    routes.get(_path)(_constant(_value))


@routes.get("/emulator/control")
async def get_control(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR].behaviour.__dict__)


@routes.get("/emulator/stats")
async def get_stats(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    return web.json_response({"model_loads": emu.model_loads, "prompts_run": emu.prompts_run,
                              "loaded_model": emu.loaded_model, "history_lookups": emu.history_lookups})


@routes.post("/emulator/control")
async def post_control(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    try:
        emu.behaviour.update(await request.json())
    except (ValueError, KeyError, AttributeError) as exc:
        return web.json_response({"error": f"bad control: {exc}"}, status=400)
    return web.json_response(emu.behaviour.__dict__)
