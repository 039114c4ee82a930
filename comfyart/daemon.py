"""``comfyart serve``: builds the services and owns the one TaskGroup of root tasks (the API server, the pool,
the tracker, the dispatcher). SIGINT/SIGTERM stop it cleanly; a root task that fails stops it too.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import signal
from collections.abc import Awaitable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import uvicorn
from loguru import logger

from comfyart.api.app import Security, Services, create_app
from comfyart.api.auth import Authenticator
from comfyart.api.comfyui.front import FrontDoor
from comfyart.auth import KeyRecord, Role, hash_key
from comfyart.bus import EventHub
from comfyart.config.sections import AuthConfig
from comfyart.config.settings import Settings
from comfyart.dispatcher import Dispatcher
from comfyart.errors import ConfigError
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.metrics import Metrics
from comfyart.pool.providers.base import Provider
from comfyart.pool.providers.docker import DockerProvider
from comfyart.pool.providers.process import ProcessProvider
from comfyart.pool.registry import Pool
from comfyart.pool.watch import ClusterWatch
from comfyart.stats import StatsHistory
from comfyart.store.api_keys import KeyStore
from comfyart.store.pool import PoolStore
from comfyart.store.quotas import Quotas
from comfyart.store.redis import EmbeddedRedis, connect_redis
from comfyart.store.tasks import TaskStore
from comfyart.store.workflows import WorkflowStore
from comfyart.tracker.tracker import Tracker
from comfyart.webhooks import WebhookSender
from comfyart.workflows.files import load_workflow_files
from comfyart.workflows.resolve import Templates

BACKEND_CONNECTIONS = 16  # to one backend at once: its WebSocket, submissions, downloads, checks
GRACEFUL_SHUTDOWN_S = 5
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


def is_loopback(host: str) -> bool:
    """Whether a listen address only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_problem(auth: AuthConfig, host: str) -> str | None:
    """Why the daemon must not start with this auth configuration on ``host``, or None."""
    if auth.active or is_loopback(host) or auth.allow_unauthenticated:
        return None
    return (f"auth is off and server.host {host} is not a loopback address: anyone who can reach it would control "
            f"the pool. Configure auth (auth.keys or auth.admin_user), or set auth.allow_unauthenticated: true")


def config_keys(auth: AuthConfig) -> list[KeyRecord]:
    return [KeyRecord(id=f"config:{k.name}", name=k.name, role=Role(k.role),
                      sha256=k.key_sha256 or hash_key(k.key.get_secret_value() if k.key else ""), created_ms=0,
                      max_queued=k.max_queued, submissions_per_minute=k.submissions_per_minute, source="config")
            for k in auth.keys]


async def build_security(settings: Settings, client: aioredis.Redis) -> Security:
    auth = settings.auth
    keys = KeyStore(client, settings.redis.prefix)
    public_url = settings.server.public_base() if settings.server.public_url else None
    secret = auth.url_secret.get_secret_value().encode() if auth.url_secret else await keys.url_secret()
    if not auth.active:
        logger.warning("auth is OFF: every caller is an admin (server.host={}); configure auth.keys or "
                       "auth.admin_user before exposing this daemon", settings.server.host)
        return Security(url_secret=secret, signed_url_ttl_s=auth.signed_url_ttl_s, limits=settings.limits,
                        public_url=public_url)
    admin_user = (auth.admin_user, auth.admin_password.get_secret_value()) \
        if auth.admin_user and auth.admin_password else None
    authenticator = Authenticator(keys, config_keys=config_keys(auth), admin_user=admin_user)
    logger.info("auth on config_keys={} run_time_keys={} admin_user={}", len(auth.keys), len(await keys.list()),
                "yes" if admin_user else "no")
    return Security(authenticator=authenticator, keys=keys,
                    quotas=Quotas(client, settings.redis.prefix, auth.quotas), url_secret=secret,
                    signed_url_ttl_s=auth.signed_url_ttl_s, limits=settings.limits,
                    private_webhooks=settings.webhooks.allow_private_targets, public_url=public_url)


def build_providers(settings: Settings) -> list[Provider]:
    providers: list[Provider] = []
    if settings.docker is not None and settings.docker.hosts:
        providers.append(DockerProvider(settings.docker, instance=settings.instance))
    if settings.processes is not None:
        providers.append(ProcessProvider(settings.processes, data_dir=settings.data_dir))
    return providers


async def _root(name: str, coroutine: Awaitable[None], stop: asyncio.Event) -> None:
    await coroutine
    if not stop.is_set():
        raise _RootExited(f"{name} stopped on its own")


async def run(settings: Settings, *, ready: asyncio.Event | None = None,
              stop: asyncio.Event | None = None, own_process: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set); ``ready`` is set once the API listens.
    ``own_process``: the process is the daemon's alone (``comfyart serve``), and its garbage collector is tuned
    for it (``tune_gc``)."""
    problem = auth_problem(settings.auth, settings.server.host)
    if problem is not None:
        raise ConfigError(problem)
    client, embedded = await connect_redis(settings)
    workflows = WorkflowStore(client, settings.redis.prefix)
    file_errors: list[str] = []
    if settings.workflows.directory is not None:
        file_errors = (await load_workflow_files(settings.workflows.directory, workflows)).errors
    objects: S3Outputs | None = None
    if settings.outputs.storage == "s3":
        assert settings.outputs.s3 is not None  # the config's validator insists
        objects = S3Outputs(settings.outputs.s3)
        await objects.check()
    # aiohttp's default caps all connections at 100, and every backend's WebSocket holds one for good: with a few
    # dozen backends, submissions and downloads would queue for a connection. The cap is per backend instead.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=BACKEND_CONNECTIONS))
    events = EventHub()
    store = TaskStore(client, settings.redis.prefix, ageing_s=settings.scheduler.priority_ageing_s, events=events)
    migrated = await store.migrate_queue()
    if migrated:
        logger.info("queue migrated to the priority queue tasks={}", migrated)
    outputs = OutputStore(settings.data_dir / "outputs")
    inputs = InputStore(settings.data_dir / "inputs")
    templates = Templates(workflows=workflows, tasks=store, inputs=inputs, outputs=outputs)
    adopt = settings.docker.leftovers == "adopt" if settings.docker else True
    pool_store = PoolStore(client, settings.redis.prefix)
    pool = Pool(config=settings.pool, providers=build_providers(settings), static_backends=settings.static_backends,
                session=session, store=pool_store, waiting=store.waiting,
                request_timeout_s=settings.tracking.submit_timeout_s, adopt_leftovers=adopt)
    tracker = Tracker(store=store, pool=pool, outputs=outputs, config=settings.tracking, session=session,
                      client_id=await pool_store.client_id(), objects=objects)
    dispatcher = Dispatcher(store=store, pool=pool, tracker=tracker, templates=templates, config=settings.scheduler,
                            claim_lease_s=settings.tracking.claim_lease_s, pool_store=pool_store)
    await dispatcher.load_overrides()
    security = await build_security(settings, client)
    front = FrontDoor(store=store, pool=pool, outputs=outputs, inputs=inputs, tracker=tracker, session=session,
                      events=events, objects=objects, quotas=security.quotas, limits=settings.limits)
    watch = ClusterWatch(events, pool_summary=lambda: {b.id: {"status": b.state.value, "mode": b.mode.value,
                                                              "inflight": len(b.prompts)}
                                                       for b in pool.backends.values()},
                         queue_depth=store.depth)
    webhooks = WebhookSender(store=store, session=session, config=settings.webhooks,
                             # signed from the task's end, so every delivery of one webhook carries the same body
                             output_url=lambda task, filename: security.output_url(
                                 settings.server.public_base(), task.id, filename,
                                 now=(task.finished_ms or task.updated_ms) / 1000)[0])
    metrics = Metrics(store=store, pool=pool, dispatcher=dispatcher, tracker=tracker, webhooks=webhooks)
    stats = StatsHistory(store, events, interval_s=settings.dashboard.stats_interval_s,
                         keep_s=settings.dashboard.stats_keep_s)
    services = Services(store, pool, outputs, workflows, templates, inputs, tracker, dispatcher, front, file_errors,
                        objects, security, metrics, stats, dashboard=settings.dashboard.enabled)
    server = _Server(uvicorn.Config(create_app(services), host=settings.server.host, port=settings.server.port,
                                    log_config=None, access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, ws_max_size=WS_MAX_BYTES))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def until_stopped(api: asyncio.Task[None]) -> None:
        await stop.wait()
        logger.info("stopping")
        server.should_exit = True
        await api
        raise _Stopping

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        logger.info("comfyart serving url=http://{}:{}", settings.server.host, settings.server.port)
        if own_process:
            tune_gc()
        if ready is not None:
            ready.set()

    try:
        async with asyncio.TaskGroup() as roots:
            roots.create_task(_root("pool", pool.run(), stop), name="pool")
            roots.create_task(_root("tracker", tracker.run(), stop), name="tracker")
            roots.create_task(_root("dispatcher", dispatcher.run(), stop), name="dispatcher")
            roots.create_task(_root("comfyui front door", front.run(), stop), name="comfyui front door")
            roots.create_task(_root("cluster events", watch.run(), stop), name="cluster events")
            roots.create_task(_root("webhooks", webhooks.run(), stop), name="webhooks")
            roots.create_task(_root("metrics", metrics.run(events), stop), name="metrics")
            roots.create_task(_root("stats", stats.run(), stop), name="stats")
            api = roots.create_task(_root("api", server.serve(), stop), name="api")
            roots.create_task(until_stopped(api), name="stop")
            roots.create_task(announce(), name="announce")
    except* _Stopping:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.shield(_close(pool, store, session, client, embedded))
    logger.info("stopped")


def tune_gc() -> None:
    """Once started: what start-up made (modules, the app, its schemas: most of the objects the daemon will ever
    hold) leaves the collector's view for good (``gc.freeze``), and young objects are collected in larger
    batches. At full throughput the collector had cost a tenth of the daemon's CPU: each full collection walked
    those 125,000 start-up objects again (60 ms, with the event loop stopped), and gen-0 collections ran every 700
    allocations, a few a millisecond."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


async def _close(pool: Pool, store: TaskStore, session: aiohttp.ClientSession, client: aioredis.Redis,
                 embedded: EmbeddedRedis | None) -> None:
    try:
        await pool.shutdown()
    finally:
        await store.transitions.aclose()  # status changes already on their way reach Redis before it closes
        await session.close()
        await client.aclose()
        if embedded is not None:
            await embedded.stop()
