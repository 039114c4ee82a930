"""``comfyart serve``: ``build`` makes every service of one daemon and wires them; ``run`` owns the one TaskGroup of
root tasks (the API server and each loop). SIGINT/SIGTERM stop it cleanly; a root task that fails stops it too.

The loops are of two kinds: every replica's (``Daemon.loops``: the ComfyUI front door, cluster events, metrics, the
v2 blob sweep, the leadership, and the leader's terms) and the leader's (``Daemon.leader_loops``: pool, inventories,
tracker, dispatcher, webhooks, stats, v2 retention), which ``cluster.terms.LeaderTerms`` runs while this replica
leads: the lease in Redis (``cluster.leadership``), which a process alone takes at once (a restart under the same
name takes its own lease back), so one ``comfyart serve`` runs everything as before. Every replica joins the
registry (``cluster.replicas``); one configured for another fleet stands by (its start-up line says so). Writes Redis
cannot fence (POST /prompt, spawn/remove, backend sockets) check ``leadership.valid()`` right before.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import uvicorn
from loguru import logger

from comfyart.api.app import create_app
from comfyart.api.comfyui.front import FrontDoor, replication_loops
from comfyart.api.deps import Services
from comfyart.api.listener import listen_socket
from comfyart.api.security import build_security
from comfyart.auth import auth_problem
from comfyart.bus import EventHub
from comfyart.cluster.gate import build as build_gate
from comfyart.cluster.leadership import Leadership
from comfyart.cluster.locator import FileLocator, file_stores
from comfyart.cluster.replicas import Replica, join, refusal, replica_name, standby_warning
from comfyart.cluster.terms import FenceBinding, LeaderTerms, Leading
from comfyart.comfy.client import ComfyClient
from comfyart.config.settings import Settings
from comfyart.dispatcher import Dispatcher
from comfyart.errors import ConfigError
from comfyart.files.assets import BlobStore
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.metrics import Metrics
from comfyart.pool.containers import Containers
from comfyart.pool.controls import PoolControls
from comfyart.pool.health import HealthChecks
from comfyart.pool.inventory import Inventories
from comfyart.pool.mirror import build as build_mirror
from comfyart.pool.providers.base import Provider
from comfyart.pool.providers.docker import DockerProvider
from comfyart.pool.providers.process import ProcessProvider
from comfyart.pool.reconciler import Reconciler
from comfyart.pool.registry import Pool
from comfyart.pool.watch import ClusterWatch, pool_summary
from comfyart.stats import StatsHistory
from comfyart.store.fence import FENCE, Fence
from comfyart.store.jobs import JobIndex
from comfyart.store.redis import until_it_ends
from comfyart.store.stores import Stores
from comfyart.store.userdata import UserData
from comfyart.sweeps.blobs import BlobSweep
from comfyart.sweeps.jobs import RetentionSweep
from comfyart.tracker.outcomes import Outcomes
from comfyart.tracker.prompts import PromptBook
from comfyart.tracker.tracker import Tracker
from comfyart.webhooks import WebhookSender
from comfyart.workflows.files import load_workflow_files
from comfyart.workflows.resolve import Resolver

BACKEND_CONNECTIONS = 16  # to one backend at once: its WebSocket, submissions, downloads, checks
GRACEFUL_SHUTDOWN_S = 5
LEADER_STOP_S = 10  # the leader's loops to stop at SIGTERM (the outputs being written finished) before handing over
GC_GEN0_THRESHOLD = 20_000  # allocations between gen-0 collections (CPython's default: 700)
WS_MAX_BYTES = 1 << 20  # a frame a client sends us: ComfyUI's clients send a few hundred bytes


class _Stopping(Exception):
    """Raised inside the root TaskGroup to end it after a stop signal."""


class _RootExited(Exception):
    """A root task returned although it should run until cancelled."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        # the daemon owns signal handling; uvicorn's own handlers would re-raise SIGTERM mid-shutdown
        yield


def build_providers(settings: Settings) -> list[Provider]:
    providers: list[Provider] = []
    if settings.docker is not None and settings.docker.hosts:
        providers.append(DockerProvider(settings.docker, instance=settings.instance))
    if settings.processes is not None:
        providers.append(ProcessProvider(settings.processes, data_dir=settings.data_dir))
    return providers


@dataclass
class Core:
    """The pool, the in-flight book and the loops that move tasks: what a daemon runs besides its API."""

    pool: Pool
    containers: Containers
    reconciler: Reconciler
    controls: PoolControls
    book: PromptBook
    outcomes: Outcomes
    tracker: Tracker
    dispatcher: Dispatcher
    resolver: Resolver
    inventories: Inventories

    async def reset(self) -> None:
        """The leader's in-process state made fresh, at each term's start and end: the pool empty and not ready
        (the reconciler's start reads it again), the book empty (the tracker's recovery reads it again)."""
        self.tracker.recovered.clear()
        self.book.clear()
        self.containers.let_go()
        self.pool.reset()
        self.inventories.forget_unused()


async def build_core(settings: Settings, stores: Stores, session: aiohttp.ClientSession, *, outputs: OutputStore,
                     inputs: InputStore, objects: S3Outputs | None, blobs: BlobStore | None = None,
                     valid: Callable[[], bool] | None = None) -> Core:  # valid: Leadership.valid
    timeout_s = settings.tracking.submit_timeout_s
    pool = Pool(config=settings.pool, providers=build_providers(settings),
                connect=lambda url: ComfyClient(session, url, timeout_s=timeout_s))
    book = PromptBook(on_change=pool.notify)
    outcomes = Outcomes(store=stores.tasks, queue=stores.queue, book=book, outputs=outputs, config=settings.tracking,
                        objects=objects, valid=valid)
    inventories = Inventories(pool, settings.pool)
    containers = Containers(pool, on_lost=outcomes.backend_lost, inventories=inventories,
                            adopt_leftovers=settings.docker.leftovers == "adopt" if settings.docker else True,
                            valid=valid)
    health = HealthChecks(pool, settings.pool, inventories)
    reconciler = Reconciler(pool, health=health, containers=containers, statics=settings.static_backends,
                            store=stores.pool, queue=stores.queue, dns=settings.dns_backends)
    client_id = await stores.pool.client_id()
    tracker = Tracker(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                      config=settings.tracking, client_id=client_id, valid=valid, lease_s=settings.cluster.lease_s)
    # the tracker's recovery runs first in each term: the dispatcher waits for it (``recovered``)
    resolver = Resolver(workflows=stores.workflows, tasks=stores.tasks, inputs=inputs, outputs=outputs,
                        preview_method=settings.comfyui.preview_method, blobs=blobs, assets=stores.assets)
    dispatcher = Dispatcher(store=stores.tasks, queue=stores.queue, pool=pool, book=book, outcomes=outcomes,
                            resolver=resolver, config=settings.scheduler, client_id=client_id,
                            upload_timeout_s=settings.tracking.download_timeout_s,
                            claim_lease_s=settings.tracking.claim_lease_s, pool_store=stores.pool,
                            inventories=inventories, recovered=tracker.recovered, valid=valid)
    await dispatcher.load_overrides()
    return Core(pool, containers, reconciler, PoolControls(pool, reconciler=reconciler, health=health,
                                                           store=stores.pool),
                book, outcomes, tracker, dispatcher, resolver, inventories)


Loops = dict[str, Callable[[], Awaitable[None]]]


@dataclass
class Daemon:
    """Every service, wired: ``loops`` are the root tasks besides the API (``terms`` runs ``leader_loops``)."""

    settings: Settings
    stores: Stores
    session: aiohttp.ClientSession
    core: Core
    services: Services
    loops: Loops
    leader_loops: Loops
    leadership: Leading
    terms: LeaderTerms
    replica: Replica


def build_leadership(stores: Stores, settings: Settings) -> Leadership:
    """Who leads: the lease in Redis (``stores.lease``), taken under this replica's name."""
    return Leadership(stores.lease, replica=replica_name(settings), config=settings.cluster)


async def build(settings: Settings, stores: Stores, session: aiohttp.ClientSession, events: EventHub) -> Daemon:
    """Make and wire every service (a bad configuration raises ConfigError)."""
    file_errors: list[str] = []
    if settings.workflows.directory is not None:
        file_errors = (await load_workflow_files(settings.workflows.directory, stores.workflows)).errors
    objects = S3Outputs(settings.outputs.s3) if settings.outputs.storage == "s3" and settings.outputs.s3 else None
    if objects is not None:  # the config's validator insists on outputs.s3 with storage s3
        await objects.check()
    configured = (settings.docker is not None and bool(settings.docker.hosts)) or settings.processes is not None
    if (warning := no_backend_warning(configured or bool(settings.static_backends or settings.dns_backends),
                                      bool(await stores.pool.static_backends()))) is not None:
        logger.warning(warning)
    outputs, inputs, blobs, files = await file_stores(settings, stores)  # files: the other replicas' (or None)
    leadership = build_leadership(stores, settings)
    core = await build_core(settings, stores, session, outputs=outputs, inputs=inputs, objects=objects, blobs=blobs,
                            valid=leadership.valid)
    pool = core.pool
    security = await build_security(settings, stores)
    front = FrontDoor(store=stores.tasks, queue=stores.queue, comfy=stores.comfy, pool=pool,
                      inventories=core.inventories, outputs=outputs, inputs=inputs, tracker=core.tracker,
                      session=session, events=events, objects=objects, quotas=security.quotas, limits=settings.limits,
                      userdata=UserData(stores.client, stores.keys, max_bytes=settings.limits.userdata_max_bytes,
                                        max_file_bytes=settings.limits.userdata_max_file_bytes))
    watch = ClusterWatch(events, pool_summary=lambda: pool_summary(pool), queue_depth=stores.queue.depth,
                         autoscaler=pool.describe_decision)
    webhooks = WebhookSender(store=stores.tasks, deliveries=stores.deliveries, session=session,
                             config=settings.webhooks, events=events,
                             # signed from the task's end, so every delivery of one webhook carries the same body
                             output_url=lambda task, filename: security.output_url(
                                 settings.server.public_base(), task.id, filename,
                                 now=(task.finished_ms or task.updated_ms) / 1000)[0])
    metrics = Metrics(store=stores.tasks, queue=stores.queue, pool=pool,
                      counters={"pool": pool.counters, "dispatch": core.dispatcher.counters,
                                "inventories": core.inventories.counters,
                                "attempts": core.outcomes.counters, "webhooks": webhooks.counters})
    stats = StatsHistory(stores.queue, stores.stats, events, interval_s=settings.dashboard.stats_interval_s,
                         keep_s=settings.dashboard.stats_keep_s)
    services = Services(stores.tasks, stores.queue, pool, core.controls, outputs, stores.workflows, core.resolver,
                        inputs, core.tracker, core.dispatcher, front, core.inventories, file_errors, objects, security,
                        metrics, stats, dashboard=settings.dashboard.enabled, editor=settings.comfyui.editor,
                        idempotency=stores.idempotency, api_v2=settings.api_v2, blobs=blobs, assets=stores.assets,
                        files=files)
    mirror = build_mirror(stores, pool, core.inventories, core.dispatcher.describe,  # replicated: pool mirror
                          leading=lambda: terms.leading() or leadership.term is not None)
    leader_loops: Loops = {  # single across the replicas: each run() starts its term afresh
        "pool": core.reconciler.run, "inventories": core.inventories.run, "tracker": core.tracker.run,
        "dispatcher": core.dispatcher.run, "webhooks": webhooks.run, "stats": stats.run,
        "v2 retention": RetentionSweep(JobIndex(stores.tasks), outputs, objects,
                                       retention_s=settings.api_v2.job_retention_s).run, **mirror.leader_loops}
    terms = LeaderTerms(leadership, leader_loops, reset=core.reset, fence=FenceBinding(FENCE, Fence))
    replica = join(settings, stores, leading=lambda: leadership.term is not None)
    services.replica, metrics.cluster = replica, replica.figures
    loops: Loops = {
        "comfyui front door": front.run, "cluster events": watch.run, "metrics": lambda: metrics.run(events),
        "v2 blob sweep": BlobSweep(blobs, stores.assets).run, "heartbeat": replica.heartbeat.run,
        "leadership": leadership.run, "leader terms": terms.run, **mirror.loops}
    loops.update(await replication_loops(stores, events, front, core.tracker))  # replicated: events, frames
    services.gate = build_gate(stores, replica.name, epoch=lambda: terms.current.epoch if terms.current else None,
                               events_connected=lambda: front.bridge is None or front.bridge.connected)
    return Daemon(settings, stores, session, core, services, loops, leader_loops, leadership, terms, replica)


def no_backend_warning(configured: bool, registered: bool) -> str | None:
    """What to say when nothing can ever run a task: ``comfyart serve`` without ``--config`` serves happily with no
    backend, and its tasks wait for good."""
    if configured or registered:
        return None
    return ("no backends: the configuration names none (docker.hosts, processes, static_backends) and none was "
            "registered (POST /api/pool/backends); tasks wait until one is. config/demo.yaml runs two emulated "
            "ComfyUIs")


async def run(settings: Settings, *, ready: asyncio.Event | None = None,
              stop: asyncio.Event | None = None, own_process: bool = False, events: EventHub | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set); ``ready`` is set once the API listens.
    ``own_process``: the process is the daemon's alone (``comfyart serve``), and its garbage collector is tuned
    for it (``tune_gc``). ``events``: the hub to publish on, for a caller that watches it (a test)."""
    problem = auth_problem(settings.auth, settings.server.host)
    if problem is not None:
        raise ConfigError(problem)
    with listen_socket(settings.server.host, settings.server.port) as listener:
        events = events if events is not None else EventHub()
        stores = await Stores.open(settings, events)
        # aiohttp caps all connections at 100 by default, and each backend's WebSocket holds one: capped per backend
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=BACKEND_CONNECTIONS))
        try:
            daemon = await build(settings, stores, session, events)
        except BaseException:
            await _close(None, stores, session)
            raise
        if (problem := await refusal(daemon.replica)) is not None:  # before it beats or asks for the lease
            await _close(None, stores, session, files=daemon.services.files)
            raise ConfigError(problem)
        await serve(daemon, listener, ready=ready, stop=stop or asyncio.Event(), own_process=own_process)


async def serve(daemon: Daemon, listener: socket.socket, *, ready: asyncio.Event | None, stop: asyncio.Event,
                own_process: bool) -> None:
    """Run the daemon's root tasks until ``stop`` (SIGINT/SIGTERM) or until one fails. The order at a stop: the
    leader's loops stop first (``LeaderTerms.stop``: no claim or submission more, the outputs being written
    finished; ``LEADER_STOP_S`` at most), then the lease is released (a standby takes over at once, no lease to
    wait out), then the API stops (``GRACEFUL_SHUTDOWN_S`` for the requests under way), then every other loop; last,
    the local backend processes are stopped and the connections closed. Alone (not replicated) the API stops first,
    as no standby waits. A root that fails skips to the release."""
    settings = daemon.settings
    server = _Server(uvicorn.Config(create_app(daemon.services), host=settings.server.host,
                                    port=settings.server.port, log_config=None, access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, ws_max_size=WS_MAX_BYTES))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def until_stopped(api: asyncio.Task[None]) -> None:
        await stop.wait()
        logger.info("stopping")
        daemon.replica.stopping = True  # /readyz turns clients away first
        if daemon.stores.replicated:  # a standby takes the fleet over at once; clients go on at the other replicas
            await _hand_over(daemon)
        server.should_exit = True
        await api
        if not daemon.stores.replicated:  # alone: the requests under way still found the pool and the tracker
            await _hand_over(daemon)
        raise _Stopping

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        logger.info("comfyart serving url=http://{}:{} replica={}", settings.server.host, settings.server.port,
                    daemon.replica.name)
        if (warning := await standby_warning(daemon.replica)) is not None:
            logger.warning(warning)
        if own_process:
            tune_gc()
        if ready is not None:
            ready.set()

    try:
        async with asyncio.TaskGroup() as roots:
            for name, loop_of in daemon.loops.items():
                roots.create_task(_root(name, loop_of(), stop), name=name)
            api = roots.create_task(_root("api", _api(server, listener), stop), name="api")
            roots.create_task(until_stopped(api), name="stop")
            roots.create_task(announce(), name="announce")
    except* _Stopping:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.shield(_close(daemon.core.containers, daemon.stores, daemon.session, daemon.leadership,
                                    daemon.services.files))
    logger.info("stopped")


async def _hand_over(daemon: Daemon) -> None:
    """SIGTERM's first steps: the leader's loops stopped, then the lease released."""
    try:
        async with asyncio.timeout(LEADER_STOP_S):
            await daemon.terms.stop()
    except TimeoutError:
        logger.warning("the leader's loops did not stop within {} s; handing over all the same", LEADER_STOP_S)
    await daemon.leadership.release()


async def _api(server: uvicorn.Server, listener: socket.socket) -> None:
    try:
        await server.serve(sockets=[listener])
    except SystemExit as exc:  # uvicorn's way to fail at start-up; raised through the TaskGroup, it hung the daemon
        raise _RootExited(f"api failed to start (exit {exc.code})") from None


async def _root(name: str, coroutine: Awaitable[None], stop: asyncio.Event) -> None:
    """A root loop, ended for good when the daemon cancels it (``until_it_ends``); one that returns on its own
    before the stop is a failure."""
    await until_it_ends(name, coroutine)
    if not stop.is_set():
        raise _RootExited(f"{name} stopped on its own")


def tune_gc() -> None:
    """Once started: what start-up made (modules, the app, its schemas: most of the objects the daemon will ever
    hold) leaves the collector's view for good (``gc.freeze``), and young objects are collected in larger
    batches. At full throughput the collector had cost a tenth of the daemon's CPU: each full collection walked
    those 125,000 start-up objects again (60 ms, with the event loop stopped), and gen-0 collections ran every 700
    allocations, a few a millisecond."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


async def _close(containers: Containers | None, stores: Stores, session: aiohttp.ClientSession,
                 leadership: Leading | None = None, files: FileLocator | None = None) -> None:
    try:
        if leadership is not None:
            await leadership.release()  # done already after a stop; after a failed root, a standby takes over now
        if containers is not None:
            await containers.shutdown()
    finally:
        if files is not None:
            await files.aclose()  # its HTTP client to the other replicas, its cache's file thread
        await session.close()
        await stores.aclose()
