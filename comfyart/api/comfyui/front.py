"""``FrontDoor``: the ComfyUI-compatible API's collaborators, built together from the daemon's services; its
``run`` is the sockets' loop, and the tracker's frames go to its relay."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from comfyart.api.comfyui.catalog import Catalog
from comfyart.api.comfyui.files import Files
from comfyart.api.comfyui.prompts import Prompts
from comfyart.api.comfyui.relay import FrameRelay
from comfyart.api.comfyui.sockets import Sockets
from comfyart.bus import EventHub
from comfyart.cluster.bridge import EventBridge
from comfyart.cluster.bridge import build as build_bridge
from comfyart.cluster.frames import FramePlane
from comfyart.config.sections import LimitsConfig
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.frames import binary_client
from comfyart.store.queue import TaskQueue
from comfyart.store.quotas import Quotas
from comfyart.store.stores import Stores
from comfyart.store.tasks import TaskStore
from comfyart.store.userdata import UserData
from comfyart.tracker.prompts import Preview
from comfyart.tracker.tracker import Tracker


class FrontDoor:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, comfy: ComfyIndex, pool: Pool,
                 inventories: Inventories, outputs: OutputStore,
                 inputs: InputStore, tracker: Tracker, session: aiohttp.ClientSession, events: EventHub,
                 userdata: UserData, objects: S3Outputs | None = None, quotas: Quotas | None = None,
                 limits: LimitsConfig | None = None) -> None:
        self.limits = limits or LimitsConfig()
        self.userdata = userdata  # the web editor's settings and saved files, per caller (api.comfyui.userdata)
        self.comfy = comfy
        self.pool = pool
        self.catalog = Catalog(pool, inventories)
        self.sockets = Sockets(store=store, queue=queue, events=events, limits=self.limits)
        self.relay = FrameRelay(self.sockets.connections)
        self.prompts = Prompts(store=store, comfy=comfy, catalog=self.catalog, inputs=inputs, tracker=tracker,
                               connections=self.sockets.connections, quotas=quotas, limits=self.limits)
        self.files = Files(store=store, pool=pool, outputs=outputs, inputs=inputs, session=session, objects=objects,
                           limits=self.limits)
        tracker.frames = self.relay
        # a v2 stream hears a task's previews from the tracker here; replicated, from other replicas' too
        # (``replication_loops``); returns the release
        self.watch_previews: Callable[[str], Callable[[], None]] = _no_watch
        self.bridge: EventBridge | None = None  # replicated: the event bridge (``/readyz`` asks if it is connected)

    async def run(self) -> None:
        """Sends each client the end of its prompts, and every socket the queue length when it changes."""
        await self.sockets.run()


def _no_watch(task_id: str) -> Callable[[], None]:
    return _nothing


def _nothing() -> None:
    return None


async def replication_loops(stores: Stores, events: EventHub, front: FrontDoor,
                            tracker: Tracker) -> dict[str, Callable[[], Awaitable[None]]]:
    """The root loops of a replicated daemon (``store.eventlog.replicated``; none in one process): the event
    bridge (``cluster.bridge``: every task event onto ``events``) and the frame plane (``build_frames``). Call it
    before anything writes a task: the bridge reads from the stream's end as it is now."""
    bridge = await build_bridge(stores, events)
    frames = build_frames(stores, front, tracker)
    loops: dict[str, Callable[[], Awaitable[None]]] = {}
    front.bridge = bridge
    if bridge is not None:
        loops["event bridge"] = bridge.run
    if frames is not None:
        loops["frames"] = frames.run
    return loops


def build_frames(stores: Stores, front: FrontDoor, tracker: Tracker) -> FramePlane | None:
    """In a replicated daemon (``store.eventlog.replicated``): the frame plane (``cluster.frames``) between the
    tracker and the ComfyUI sockets and v2 streams of every replica; run ``FramePlane.run`` as a root loop of every
    replica. None in one process: the tracker's frames go straight to the local relay, as they always did."""
    if not stores.replicated:
        return None

    def preview_in(task_id: str, node: str | None, payload: bytes) -> None:
        tracker.previews.publish({"type": "preview", "id": task_id, "preview": Preview(node, payload),
                                  "relayed": True})

    plane = FramePlane(binary_client(stores.client), stores.keys, front.relay,
                       is_local=front.sockets.connections.__contains__, previews=tracker.previews,
                       previews_in=preview_in)
    tracker.frames = plane
    front.sockets.follow = plane.follow
    front.watch_previews = plane.watch_previews
    return plane
