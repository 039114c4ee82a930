"""One ``Dispatcher.round`` over the real Redis and an emulator, without a daemon around it: what one round claims
and submits; and submissions whose backend is given up for lost while they are on their way (a backend served
from the test, which answers when the test says)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.config.sections import SchedulerConfig, TrackingConfig
from comfyart.dispatcher import Dispatcher
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask, TaskStatus
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool
from comfyart.pool.unreachable import give_up, take_back
from comfyart.store.stores import Stores
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.workflows.resolve import PreparedPrompt, Resolver, Upload
from tests.support.graphs import basic_graph
from tests.support.ports import free_port


async def test_a_dispatch_round_claims_and_submits_one_prompt_per_free_slot(emulator, session, redis_client,
                                                                            tmp_path: Path):
    backend_emulator = emulator("--node-seconds", "0.5")
    stores = Stores.on(redis_client, "round")
    pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
    backend = pool.add_static(StaticBackendConfig(name="one", url=backend_emulator.url), "config")
    await HealthChecks(pool, pool.config).probe(backend)
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book, outputs=OutputStore(tmp_path / "out"),
                        config=TrackingConfig())
    dispatcher = Dispatcher(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                            resolver=Resolver(workflows=stores.workflows, tasks=stores.tasks,
                                              inputs=InputStore(tmp_path / "in"), outputs=OutputStore(tmp_path / "o")),
                            config=SchedulerConfig(prefetch=1), client_id="round")
    tasks = [await stores.tasks.create(NewTask(basic_graph(color=i))) for i in range(4)]
    async with asyncio.TaskGroup() as submissions:
        assert await dispatcher.round(submissions)  # one backend, prefetch 1: two slots
    assert len(book) == 2 and len(backend.prompts) == 2
    assert await stores.queue.length() == 2
    submitted = [await stores.tasks.get(t.id) for t in tasks[:2]]
    assert [(t.backend, t.attempts) for t in submitted] == [("static:one", 1)] * 2
    queue = await backend.client.queue()
    on_backend = {item[1] for key in ("queue_running", "queue_pending") for item in queue[key]}
    assert on_backend == set(backend.prompts)  # the prompt ids comfyart minted, on the backend
    async with asyncio.TaskGroup() as submissions:
        assert not await dispatcher.round(submissions)  # no slot free: nothing claimed
    assert await stores.queue.length() == 2
    waiting = await stores.tasks.get_many([t.id for t in tasks[2:]])
    assert [t.status for t in waiting if t is not None] == [TaskStatus.PENDING] * 2
    assert [t.backend for t in waiting if t is not None] == [None, None]
    await outcomes.aclose()


class Backstage:
    """A backend served from the test itself: ``/system_stats`` and ``/queue`` answer, ``/history`` fails, and
    POST /prompt and /upload/image run ``on_prompt`` and ``on_upload`` before they answer (POST /prompt with HTTP
    500: the answer is lost; or, with ``reject``, ComfyUI's 400 for an invalid prompt). ``queued`` is what /queue
    shows pending; ``deleted`` what POST /queue deleted."""

    def __init__(self) -> None:
        self.on_prompt: Callable[[], Awaitable[None]] = _nothing
        self.on_upload: Callable[[], Awaitable[None]] = _nothing
        self.reject = False
        self.queued: list[str] = []
        self.deleted: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Backstage:
        app = web.Application()
        app.router.add_get("/system_stats", self._stats)
        app.router.add_get("/queue", self._queue)
        app.router.add_post("/queue", self._delete)
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_post("/upload/image", self._upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"ram_free": 1 << 30}, "devices": []})

    async def _queue(self, request: web.Request) -> web.Response:
        pending = [[n, prompt_id, {}, {}, []] for n, prompt_id in enumerate(self.queued)]
        return web.json_response({"queue_running": [], "queue_pending": pending})

    async def _delete(self, request: web.Request) -> web.Response:
        for prompt_id in (await request.json()).get("delete", []):
            self.deleted.append(prompt_id)
            self.queued.remove(prompt_id)
        return web.json_response({})

    async def _history(self, request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def _prompt(self, request: web.Request) -> web.Response:
        await self.on_prompt()
        if self.reject:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation", "message": "invalid"},
                                      "node_errors": {}}, status=400)
        return web.Response(status=500)

    async def _upload(self, request: web.Request) -> web.Response:
        await self.on_upload()
        form = await request.post()
        image = form["image"]
        assert isinstance(image, web.FileField)
        return web.json_response({"name": image.filename, "subfolder": "", "type": "input"})


async def _nothing() -> None:
    return None


def dispatcher_over(stores: Stores, pool: Pool, book: PromptBook, outcomes: Outcomes, tmp_path: Path) -> Dispatcher:
    return Dispatcher(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                      resolver=Resolver(workflows=stores.workflows, tasks=stores.tasks,
                                        inputs=InputStore(tmp_path / "in"), outputs=OutputStore(tmp_path / "o")),
                      config=SchedulerConfig(prefetch=1), client_id="late")


async def test_a_submission_given_up_while_uncertain_is_taken_back_should_it_land(session, redis_client,
                                                                                  tmp_path: Path):
    """POST /prompt loses its answer and /history cannot be asked; meanwhile the backend was given up for lost and
    then answered again (take_back found nothing to take back). The prompt may still land there: it is noted as
    given up, so the next take_back deletes it from the backend's queue."""
    backstage = await Backstage().start()
    try:
        stores = Stores.on(redis_client, "late")
        pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
        backend = pool.add_static(StaticBackendConfig(name="late", url=backstage.url), "config")
        await HealthChecks(pool, pool.config).probe(backend)
        book = PromptBook(on_change=pool.notify)
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "out"), config=TrackingConfig())
        dispatcher = dispatcher_over(stores, pool, book, outcomes, tmp_path)
        task = await stores.tasks.create(NewTask(basic_graph()))

        async def out_of_reach_then_back() -> None:
            await give_up(pool, backend, "unreachable for 30 s", outcomes.backend_lost)
            await take_back(backend)  # it answers again: nothing of the prompt on it yet

        backstage.on_prompt = out_of_reach_then_back
        async with asyncio.TaskGroup() as submissions:
            assert await dispatcher.round(submissions)
        record = await stores.tasks.get(task.id)
        assert record.status is TaskStatus.PENDING and record.prompt_id is None  # requeued, as given up
        [attempt] = record.history
        assert attempt.outcome == "backend_lost" and not book.get(attempt.prompt_id)
        assert backend.given_up == {attempt.prompt_id}

        backstage.queued.append(attempt.prompt_id)  # the POST lands after all
        await take_back(backend)
        assert backstage.deleted == [attempt.prompt_id] and not backend.given_up
        await outcomes.aclose()
    finally:
        await backstage.stop()


async def test_an_input_that_fails_after_its_attempt_was_given_up_leaves_the_task_alone(session, redis_client,
                                                                                      tmp_path: Path):
    """The backend is given up for lost while the first of two inputs uploads, and the task is claimed again for
    its next attempt; then the second input cannot be read. The task's new attempt neither fails nor loses its
    claim: the error belongs to an attempt that has ended."""
    backstage = await Backstage().start()
    try:
        stores = Stores.on(redis_client, "upload")
        pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
        backend = pool.add_static(StaticBackendConfig(name="slow", url=backstage.url), "config")
        book = PromptBook(on_change=pool.notify)
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "out"), config=TrackingConfig())
        dispatcher = dispatcher_over(stores, pool, book, outcomes, tmp_path)
        task = await stores.tasks.create(NewTask(basic_graph()))
        assert await stores.queue.claim_id(task.id, 30)
        await stores.queue.record_submission(task.id, backend=backend.id, prompt_id="old", attempts=1)
        state = book.open(backend, "old", task.id, basic_graph())
        picture = tmp_path / "a.png"
        picture.write_bytes(b"\x89PNG\r\n\x1a\n")
        uploads = [Upload("image", picture, "a.png", "image/png"),
                   Upload("mask", tmp_path / "gone.png", "gone.png", "image/png")]

        async def given_up_and_claimed_again() -> None:
            await give_up(pool, backend, "unreachable for 30 s", outcomes.backend_lost)
            assert await stores.queue.claim_id(task.id, 30)  # the next attempt, on its way to another backend

        backstage.on_upload = given_up_and_claimed_again
        await dispatcher._submit(backend, "old", state, PreparedPrompt(basic_graph(), uploads))
        record = await stores.tasks.get(task.id)
        assert record.status is TaskStatus.PENDING and record.error != "" and record.finished_ms is None
        assert [a.outcome for a in record.history] == ["backend_lost"]
        # the new attempt still holds its claim: it is recorded
        await stores.queue.record_submission(task.id, backend="static:other", prompt_id="new", attempts=2)
        assert (await stores.tasks.get(task.id)).prompt_id == "new"
        await outcomes.aclose()
    finally:
        await backstage.stop()


async def test_a_rejection_of_an_attempt_given_up_leaves_the_task_alone(session, redis_client, tmp_path: Path):
    """ComfyUI rejects the prompt, but its answer comes after the backend was given up for lost and the task was
    submitted again elsewhere: the rejection ends nothing (the store's compare-and-set on the prompt id refuses)."""
    backstage = await Backstage().start()
    try:
        stores = Stores.on(redis_client, "reject")
        pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: ComfyClient(session, url))
        backend = pool.add_static(StaticBackendConfig(name="slow", url=backstage.url), "config")
        await HealthChecks(pool, pool.config).probe(backend)
        book = PromptBook(on_change=pool.notify)
        outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book,
                            outputs=OutputStore(tmp_path / "out"), config=TrackingConfig())
        dispatcher = dispatcher_over(stores, pool, book, outcomes, tmp_path)
        task = await stores.tasks.create(NewTask(basic_graph()))

        async def given_up_and_submitted_again() -> None:
            await give_up(pool, backend, "unreachable for 30 s", outcomes.backend_lost)
            assert await stores.queue.claim_id(task.id, 30)
            await stores.queue.record_submission(task.id, backend="static:other", prompt_id="new", attempts=2)

        backstage.on_prompt, backstage.reject = given_up_and_submitted_again, True
        async with asyncio.TaskGroup() as submissions:
            assert await dispatcher.round(submissions)
        record = await stores.tasks.get(task.id)
        assert record.status is TaskStatus.PENDING and record.prompt_id == "new" and record.node_errors is None
        assert [a.outcome for a in record.history] == ["backend_lost"] and len(book) == 0
        await outcomes.aclose()
    finally:
        await backstage.stop()
