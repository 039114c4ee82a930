"""Reading inventories (pool.inventory): backends that answer the same ``/object_info`` share one parsed inventory,
also when their reads run together (as they do when a fleet becomes healthy at once, and at each refresh)."""
from __future__ import annotations

from collections.abc import Callable

import aiohttp

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from tests.support.emulator import EmulatorProcess
from tests.support.ports import free_port_range, wait_for_port

SAME_IMAGE = 8
# reads that arrive while the first parse of their document runs: about half the rounds had some before the fix
ROUNDS = 20


async def test_backends_of_one_image_read_together_share_one_parse(
        emulator: Callable[..., EmulatorProcess], session: aiohttp.ClientSession) -> None:
    first, last = free_port_range(SAME_IMAGE)
    emulator("--count", str(SAME_IMAGE), port=first)  # identical servers: same nodes, same checkpoints
    wait_for_port(last)
    config = PoolConfig(min_containers=0)
    for _ in range(ROUNDS):
        pool = Pool(config=config, providers=[], connect=lambda url: ComfyClient(session, url))
        backends = [pool.add_static(StaticBackendConfig(name=f"b{i}", url=f"http://127.0.0.1:{port}"), "config")
                    for i, port in enumerate(range(first, last + 1))]
        inventories = Inventories(pool, config)

        read = await inventories.refresh(backends)

        assert read[0] is not None and all(inventory is read[0] for inventory in read)
        assert all(backend.inventory is read[0] for backend in backends)
        assert (inventories.reads, inventories.parses) == (SAME_IMAGE, 1)
        assert len(inventories.distinct()) == 1
