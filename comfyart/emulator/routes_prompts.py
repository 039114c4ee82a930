"""The queue's routes: ``/prompt`` (validate and queue), ``/queue``, ``/interrupt`` and ``/history``."""
from __future__ import annotations

import heapq
import uuid

from aiohttp import web

from comfyart.emulator.answers import failure, json_body, json_object
from comfyart.emulator.behaviour import DEEP
from comfyart.emulator.engine import EMULATOR, Emulator
from comfyart.emulator.execution import QueueItem, now_ms
from comfyart.emulator.newest import INVALID_PROMPT_ID, is_canonical_uuid, queued_extra_data
from comfyart.emulator.validation import validate_prompt

routes = web.RouteTableDef()


@routes.get("/prompt")
async def prompt_info(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    return web.json_response({"exec_info": {"queue_remaining": emu.queue_remaining()}})


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    body = await json_object(request)
    if body is None:
        return failure()
    if emu.behaviour.refuse_prompts > 0:
        emu.behaviour.refuse_prompts -= 1
        return failure()
    if "number" in body:
        number: float = float(body["number"])
    else:
        number = emu.counter
        if body.get("front"):
            number = -number
        emu.counter += 1
    if "prompt" not in body:
        error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                 "extra_info": {}}
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    prompt = body["prompt"]
    if prompt == []:  # ComfyUI walks it as a graph without nodes: no outputs
        prompt = {}
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
        return failure()
    newest = emu.flavour.newest
    if newest and body.get("prompt_id") is not None and not is_canonical_uuid(body["prompt_id"]):
        return web.json_response({"error": INVALID_PROMPT_ID, "node_errors": {}}, status=400)
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    targets = body.get("partial_execution_targets")
    ok, error, outputs, node_errors = validate_prompt(prompt, targets, emu.input_dir, emu.models, emu.nodes)
    if not ok:
        return web.json_response({"error": error, "node_errors": node_errors}, status=400)
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    extra_data = queued_extra_data(extra_data, request.headers.get("Comfy-Usage-Source"), newest=newest,
                                   now_ms=now_ms())
    emu.enqueue(QueueItem(number, prompt_id, prompt, extra_data, outputs))
    await emu.broadcast_status()
    if emu.behaviour.drop_prompt_answers > 0:
        emu.behaviour.drop_prompt_answers -= 1
        if request.transport is not None:
            request.transport.close()  # the prompt is queued, but its answer is lost on the way
        raise ConnectionResetError("answer dropped on purpose")
    if "prompt_answer" in emu.behaviour.garbage:
        return web.Response(text="<html><body>Bad Gateway?</body></html>", content_type="text/html")
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    running = [emu.running.wire()] if emu.running else []
    return web.json_response({"queue_running": running, "queue_pending": [e[2].wire() for e in emu.pending]})


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    body = await json_object(request)
    if body is None:
        return failure()
    changed = False
    if body.get("clear"):
        emu.pending.clear()
        changed = True
    if "delete" in body:
        doomed = set(body["delete"])
        before = len(emu.pending)
        emu.pending[:] = [e for e in emu.pending if e[2].prompt_id not in doomed]
        heapq.heapify(emu.pending)
        changed = changed or before != len(emu.pending)
    if changed:
        await emu.broadcast_status()
    return web.Response(status=200)


@routes.post("/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    try:
        body = await json_body(request)
    except ValueError:
        body = None
    target = body.get("prompt_id") if isinstance(body, dict) else None
    if emu.running is not None and (target is None or target == emu.running.prompt_id):
        emu.interrupt_requested = True
    return web.Response(status=200)


def _garbled_history(emu: Emulator) -> web.Response | None:
    if "history" in emu.behaviour.garbage:
        return web.Response(text='{"broken": [', content_type="application/json")
    if "deep_json" in emu.behaviour.garbage:
        return web.Response(text='{"a": ' + "[" * DEEP + "]" * DEEP + "}", content_type="application/json")
    return None


@routes.get("/history")
async def history(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    garbled = _garbled_history(emu)
    if garbled is not None:
        return garbled
    try:
        max_items = int(request.query["max_items"]) if "max_items" in request.query else None
        offset = int(request.query.get("offset", -1))
    except ValueError:
        return failure()
    items = list(emu.history.items())
    if offset >= 0:
        items = items[offset:offset + max_items] if max_items is not None else items[offset:]
    elif max_items is not None:
        items = items[-max_items:] if max_items > 0 else []
    return web.json_response(dict(items))


@routes.get("/history/{prompt_id}")
async def history_one(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    pid = request.match_info["prompt_id"]
    emu.history_lookups += 1
    garbled = _garbled_history(emu)
    if garbled is not None:
        return garbled
    return web.json_response({pid: emu.history[pid]} if pid in emu.history else {})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    body = await json_object(request)
    if body is None:
        return failure()
    if body.get("clear"):
        emu.history.clear()
    for pid in body.get("delete", []):
        emu.history.pop(pid, None)
    return web.Response(status=200)
