"""``build_app``: the aiohttp application of one emulated ComfyUI server, reproducing the message sequences recorded
from ComfyUI 0.3.64 (shared/comfyui/transcripts): its middlewares, every route (also under /api), and the worker
and publisher tasks it starts and stops.
"""
from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from comfyart.emulator import routes_files, routes_frontend, routes_info, routes_jobs, routes_prompts, routes_socket
from comfyart.emulator.engine import EMULATOR, Emulator, app_key
from comfyart.emulator.newest import FEATURES_0_3_64

TASKS: web.AppKey[list[asyncio.Task[None]]] = app_key("tasks", list)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def build_app(emu: Emulator) -> web.Application:
    app = web.Application(middlewares=[_origin_check, _options_ok, _empty_not_found],
                          client_max_size=int(FEATURES_0_3_64["max_upload_size"]))
    app[EMULATOR] = emu
    tables = (routes_socket.routes, routes_prompts.routes, routes_files.routes, routes_info.routes,
              routes_frontend.routes)
    app.add_routes(routes_frontend.internal)
    app.add_routes(routes_frontend.static)
    app.add_routes(routes_jobs.routes)  # declared with their /api prefix, as the newest server.py does
    for table in tables:
        app.add_routes(table)
    # every route is mirrored under /api, as ComfyUI does
    api_routes = web.RouteTableDef()
    for table in tables:
        for route in table:
            if isinstance(route, web.RouteDef):
                api_routes.route(route.method, "/api" + route.path)(route.handler)
    app.add_routes(api_routes)
    app.router.add_get("/", _index)
    app.router.add_get("/api/", _index)
    app.on_startup.append(_start_worker)
    app.on_shutdown.append(_stop_worker)
    return app


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><html><head><title>ComfyUI</title></head>"
                             "<body>comfyart ComfyUI emulator</body></html>", content_type="text/html")


async def _start_worker(app: web.Application) -> None:
    emu = app[EMULATOR]
    loop = asyncio.get_running_loop()
    app[TASKS] = [loop.create_task(emu.worker(), name="emulator-worker"),
                  loop.create_task(emu.publisher(), name="emulator-publisher")]


async def _stop_worker(app: web.Application) -> None:
    for task in app[TASKS]:
        task.cancel()
    for ws in list(app[EMULATOR].sockets.values()):
        await ws.close()


@web.middleware
async def _origin_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    host = request.headers.get("Host", "")
    if origin and host:
        host_name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        origin_host = origin.split("://", 1)[-1].split("/", 1)[0]
        if host_name in _LOOPBACK_HOSTS and origin_host != host:
            return web.Response(status=403)
    return await handler(request)


@web.middleware
async def _empty_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown route answers 404 with an empty body, as ComfyUI's server does."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404, content_type="application/octet-stream")


@web.middleware
async def _options_ok(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=200)
    return await handler(request)
