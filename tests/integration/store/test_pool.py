"""The pool's state in Redis (store.pool): static backends registered at run time, scale overrides, the client id."""
from __future__ import annotations

from comfyart.config.fleet import StaticBackendConfig
from comfyart.store.keys import Keys
from comfyart.store.pool import PoolStore, ScaleOverride


async def test_pool_store_keeps_static_backends_scale_overrides_and_the_client_id(redis_client):
    pools = PoolStore(redis_client, Keys("test"))
    first_id = await pools.client_id()
    assert first_id.startswith("comfyart-") and await PoolStore(redis_client, Keys("test")).client_id() == first_id
    await pools.add_static(StaticBackendConfig(name="gpu-box", url="http://127.0.0.1:9", tags=["video"], weight=2))
    assert await pools.static_backends() == {"gpu-box": StaticBackendConfig(name="gpu-box", url="http://127.0.0.1:9",
                                                                            tags=["video"], weight=2)}
    await redis_client.hset("test:static-backends", "old", "http://127.0.0.1:10")  # as 0.1 wrote it
    assert (await pools.static_backends())["old"] == StaticBackendConfig(name="old", url="http://127.0.0.1:10")
    assert await pools.remove_static("gpu-box") and not await pools.remove_static("gpu-box")
    assert await pools.scale_override() == ScaleOverride()
    await pools.set_scale_override(ScaleOverride(min_containers=2, target=3))
    assert await pools.scale_override() == ScaleOverride(min_containers=2, target=3)
    await pools.set_scale_override(ScaleOverride())
    assert await pools.scale_override() == ScaleOverride()
