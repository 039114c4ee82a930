"""The tracker's lookups against a scripted ComfyUI peer on a loopback port, for orders of answers an emulator
cannot be made to give on cue."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig
from comfyart.config.sections import TrackingConfig
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask, TaskStatus
from comfyart.pool.backend import Backend
from comfyart.pool.registry import Pool
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.tracker.tracker import Tracker
from tests.support.daemon import serving
from tests.support.graphs import basic_graph

PROMPT_ID = "4b1d6a2e-0000-4000-8000-000000000001"


async def test_a_prompt_that_ends_between_the_history_and_queue_lookups_is_not_run_again(tmp_path: Path,
                                                                                          redis_client):
    """The watchdog asks /history (not finished yet), then /queue (finished meanwhile, so gone): the prompt is in
    neither answer. It must be looked up in /history again, not requeued as lost, which would run it twice."""
    finished = {PROMPT_ID: {"prompt": [0, PROMPT_ID, basic_graph(), {}, ["3"]],
                            "outputs": {"3": {"images": [{"filename": "a_00001_.png", "subfolder": "",
                                                          "type": "output"}]}},
                            "status": {"status_str": "success", "completed": True, "messages": []}}}
    history_answers: list[dict[str, Any]] = [{}, finished]
    calls: list[str] = []
    picture = io.BytesIO()
    Image.new("RGB", (4, 4)).save(picture, format="PNG")

    async def history(request: web.Request) -> web.Response:
        calls.append("history")
        return web.json_response(history_answers.pop(0) if len(history_answers) > 1 else history_answers[0])

    async def queue(request: web.Request) -> web.Response:
        calls.append("queue")
        return web.json_response({"queue_running": [], "queue_pending": []})

    async def view(request: web.Request) -> web.Response:
        return web.Response(body=picture.getvalue(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/history/{prompt_id}", history)
    app.router.add_get("/queue", queue)
    app.router.add_get("/view", view)
    async with serving(app) as url:
        stores = Stores.on(redis_client, "lookups")
        store = stores.tasks
        task = await store.create(NewTask(basic_graph()))
        assert await stores.queue.claim_id(task.id, 30)
        await stores.queue.record_submission(task.id, backend="static:peer", prompt_id=PROMPT_ID, attempts=1)
        async with aiohttp.ClientSession() as session:
            pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
            backend = Backend(id="static:peer", kind="static", host="", url=url, client=ComfyClient(session, url))
            pool.backends[backend.id] = backend
            book = PromptBook(on_change=pool.notify)
            outcomes = Outcomes(store=store, queue=stores.queue, book=book,
                                outputs=OutputStore(tmp_path / "outputs"), config=TrackingConfig())
            tracker = Tracker(store=store, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                              config=TrackingConfig(), client_id="lookups")
            book.open(backend, PROMPT_ID, task.id, basic_graph()).submitted = True
            await tracker.settle(backend, PROMPT_ID)
            await outcomes.aclose()
        record = await store.get(task.id)
        assert calls == ["history", "queue", "history"]
        assert record.status is TaskStatus.COMPLETED, record
        assert record.attempts == 1 and record.history == []
        assert [o.filename for o in record.outputs] == ["a_00001_.png"]
        assert PROMPT_ID not in book and not backend.prompts  # the slot is free
