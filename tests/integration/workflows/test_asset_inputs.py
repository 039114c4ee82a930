"""v2 assets delivered at dispatch (workflows.resolve): a raw graph naming a blob by its backend file name gets its
bytes uploaded first, but only while the task's owner has a live asset of that blob."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from comfyart.errors import InvalidInput
from comfyart.files.assets import BlobStore
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask
from comfyart.policy.assets import comfy_input_name
from comfyart.store.stores import Stores
from comfyart.workflows.resolve import Resolver, Upload


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _graph(image: str) -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


@pytest.fixture
async def blobs(tmp_path) -> AsyncIterator[BlobStore]:
    store = BlobStore(tmp_path / "assets")
    yield store
    await store.aclose()


async def test_a_blob_reaches_the_backend_only_for_an_owner_of_an_asset_of_it(redis_client, tmp_path, blobs):
    stores = Stores.on(redis_client, "t")
    resolver = Resolver(workflows=stores.workflows, tasks=stores.tasks, inputs=InputStore(tmp_path / "in"),
                        outputs=OutputStore(tmp_path / "out"), blobs=blobs, assets=stores.assets)
    blob = await blobs.write_stream(_once(b"\x89PNG fake"), max_bytes=1024)
    asset, _ = await stores.assets.create("alice", hash=blob.hash, size=blob.size, content_type="image/png",
                                          file_path="photo.png", now_ms=int(time.time() * 1000))
    name = comfy_input_name(blob.hex, "photo.png")
    mine = await stores.tasks.create(NewTask(_graph(name), owner="alice"))
    prepared = await resolver.prepare(mine)
    assert prepared.uploads == [Upload("1.image", blob.path, name, "image/png")]
    theirs = await stores.tasks.create(NewTask(_graph(name), owner="carol"))
    with pytest.raises(InvalidInput, match="^1.image: the asset of .* was deleted or has expired$"):
        await resolver.prepare(theirs)
    await stores.assets.delete("alice", asset.id)
    with pytest.raises(InvalidInput):
        await resolver.prepare(mine)
    # a name of no stored blob is a backend's own file: left to its validation
    other = await stores.tasks.create(NewTask(_graph("ab" * 32 + ".png"), owner="alice"))
    assert (await resolver.prepare(other)).uploads == []
