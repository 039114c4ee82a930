"""``FrontDoor``: the ComfyUI-compatible API's collaborators, built together from the daemon's services; its
``run`` is the sockets' loop, and the tracker's frames go to its relay."""
from __future__ import annotations

import aiohttp

from comfyart.api.comfyui.catalog import Catalog
from comfyart.api.comfyui.files import Files
from comfyart.api.comfyui.prompts import Prompts
from comfyart.api.comfyui.relay import FrameRelay
from comfyart.api.comfyui.sockets import Sockets
from comfyart.bus import EventHub
from comfyart.config.sections import LimitsConfig
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.queue import TaskQueue
from comfyart.store.quotas import Quotas
from comfyart.store.tasks import TaskStore
from comfyart.store.userdata import UserData
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

    async def run(self) -> None:
        """Sends each client the end of its prompts, and every socket the queue length when it changes."""
        await self.sockets.run()
