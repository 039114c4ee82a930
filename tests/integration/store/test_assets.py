"""The v2 asset records (store.assets) on a real redis-server: owners never see each other's assets or blobs, an
upload of the same thing returns the same asset, expiry, and deletes."""
from __future__ import annotations

import time
import uuid

import pytest
import redis.asyncio as aioredis

from comfyart.errors import NotFound
from comfyart.store.assets import AssetRecord, AssetStore, is_asset_id
from comfyart.store.keys import Keys

HEX = "ab" * 32
OTHER_HEX = "cd" * 32
# Redis expires records by its own clock, so times must be real ones; an hour ahead, so that a record set to expire
# a minute after NOW outlives a long run of the suite between this import and the test
NOW = int(time.time() * 1000) + 3_600_000


@pytest.fixture
def assets(redis_client: aioredis.Redis) -> AssetStore:
    return AssetStore(redis_client, Keys("test"))


async def _upload(assets: AssetStore, owner: str | None, *, hex_digest: str = HEX, file_path: str = "photo.png",
                  now_ms: int = NOW, expires_ms: int | None = None) -> tuple[AssetRecord, bool]:
    return await assets.create(owner, hash="blake3:" + hex_digest, size=123, content_type="image/png",
                               file_path=file_path, now_ms=now_ms, expires_ms=expires_ms)


async def test_an_asset_is_its_owners_alone(assets: AssetStore) -> None:
    mine, created = await _upload(assets, "alice")
    assert created and is_asset_id(mine.id) and uuid.UUID(mine.id).version == 4
    assert await assets.get("alice", mine.id) == mine
    assert mine == AssetRecord(mine.id, "alice", "blake3:" + HEX, 123, "image/png", "photo.png", NOW)
    assert await assets.get("bob", mine.id) is None
    assert await assets.get(None, mine.id) is None
    # a blob is mintable only by an owner that has an asset of it: another's is as unknown as no blob at all
    assert await assets.of_blob("alice", HEX, now_ms=NOW) == mine
    assert await assets.of_blob("bob", HEX, now_ms=NOW) is None
    assert await assets.of_blob("alice", OTHER_HEX, now_ms=NOW) is None
    with pytest.raises(NotFound, match=f"^asset {mine.id} not found$"):
        await assets.delete("bob", mine.id)
    assert await assets.get("alice", mine.id) == mine


async def test_the_same_upload_returns_the_same_asset_and_anything_else_a_new_one(assets: AssetStore) -> None:
    first, _ = await _upload(assets, "alice")
    again, created = await _upload(assets, "alice", now_ms=NOW + 5)
    assert (again, created) == (first, False)
    renamed, created = await _upload(assets, "alice", file_path="other.png")
    assert created and renamed.id != first.id
    theirs, created = await _upload(assets, "bob")
    assert created and theirs.id != first.id and theirs.owner == "bob"
    shared, created = await _upload(assets, None)
    assert created and shared.owner is None
    assert await assets.get(None, shared.id) == shared


async def test_an_asset_expires_and_its_blob_with_it_for_that_owner(assets: AssetStore,
                                                                     redis_client: aioredis.Redis) -> None:
    soon, _ = await _upload(assets, "alice", expires_ms=NOW + 60_000)
    assert await assets.of_blob("alice", HEX, now_ms=NOW + 59_999) == soon
    assert await assets.of_blob("alice", HEX, now_ms=NOW + 60_001) is None
    assert await redis_client.pexpiretime(Keys("test").asset(soon.id)) == NOW + 60_000
    # asked again for longer: the same asset, kept longer; asked for less: not shortened
    longer, created = await _upload(assets, "alice", expires_ms=NOW + 120_000)
    assert (longer.id, longer.expires_ms, created) == (soon.id, NOW + 120_000, False)
    shorter, _ = await _upload(assets, "alice", expires_ms=NOW + 90_000)
    assert shorter.expires_ms == NOW + 120_000
    forever, _ = await _upload(assets, "alice")
    assert (forever.id, forever.expires_ms) == (soon.id, None)
    assert await redis_client.pexpiretime(Keys("test").asset(soon.id)) == -1
    assert await assets.of_blob("alice", HEX, now_ms=NOW + 10 ** 9) == forever


async def test_a_record_gone_from_redis_is_gone(assets: AssetStore) -> None:
    past, _ = await _upload(assets, "alice", now_ms=1_000, expires_ms=61_000)  # expired long ago
    assert await assets.get("alice", past.id) is None
    again, created = await _upload(assets, "alice")
    assert created and again.id != past.id


async def test_a_delete_happens_once(assets: AssetStore) -> None:
    kept, _ = await _upload(assets, "alice", file_path="a.png")
    gone, _ = await _upload(assets, "alice", file_path="b.png")
    await assets.delete("alice", gone.id)
    assert await assets.get("alice", gone.id) is None
    with pytest.raises(NotFound):
        await assets.delete("alice", gone.id)
    assert await assets.of_blob("alice", HEX, now_ms=NOW) == kept
    await assets.delete("alice", kept.id)
    assert await assets.of_blob("alice", HEX, now_ms=NOW) is None


@pytest.mark.parametrize("asset_id", ["", "nope", "../x", str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}"])
async def test_what_is_no_asset_id_is_not_found(assets: AssetStore, asset_id: str) -> None:
    assert not is_asset_id(asset_id)
    assert await assets.get("alice", asset_id) is None
    with pytest.raises(NotFound):
        await assets.delete("alice", asset_id)


async def test_an_owners_file_paths_name_its_latest_live_asset(assets: AssetStore) -> None:
    first, _ = await _upload(assets, "alice")
    assert await assets.by_paths("alice", ["photo.png", "none.png"]) == {"photo.png": first}
    assert await assets.by_paths("bob", ["photo.png"]) == {}
    assert await assets.by_paths("alice", []) == {}
    newer, _ = await _upload(assets, "alice", hex_digest=OTHER_HEX)
    assert await assets.by_paths("alice", ["photo.png"]) == {"photo.png": newer}
    await assets.delete("alice", first.id)  # not the one the path names: it still names the newer one
    assert await assets.by_paths("alice", ["photo.png"]) == {"photo.png": newer}
    await assets.delete("alice", newer.id)
    assert await assets.by_paths("alice", ["photo.png"]) == {}
    short, _ = await _upload(assets, "alice", file_path="brief.png", expires_ms=NOW + 50)
    await assets.redis.delete(assets.keys.asset(short.id))  # as Redis expires it
    assert await assets.by_paths("alice", ["brief.png"]) == {}


async def test_many_reads_only_the_owners_live_assets(assets: AssetStore) -> None:
    mine, _ = await _upload(assets, "alice")
    theirs, _ = await _upload(assets, "bob")
    missing = str(uuid.uuid4())
    assert await assets.many("alice", [mine.id, theirs.id, missing, "garbage", mine.id]) == {mine.id: mine}
    assert await assets.many(None, [mine.id]) == {}
    assert await assets.many("alice", []) == {}


async def test_a_blob_is_live_while_an_asset_of_any_owner_names_it(assets: AssetStore,
                                                                   redis_client: aioredis.Redis) -> None:
    """What the blob GC asks: one owner's asset keeps a blob, whoever else had one; deleted and expired ones do
    not; an asset kept longer (uploaded again) keeps it longer."""
    assert await assets.live_blobs([HEX, OTHER_HEX], now_ms=NOW) == set()
    alice, _ = await _upload(assets, "alice", expires_ms=NOW + 60_000)
    bob, _ = await _upload(assets, "bob")
    anyone, _ = await _upload(assets, None, hex_digest=OTHER_HEX, expires_ms=NOW + 60_000)
    assert await assets.live_blobs([HEX, OTHER_HEX], now_ms=NOW) == {HEX, OTHER_HEX}
    await assets.delete("bob", bob.id)
    assert await assets.live_blobs([HEX], now_ms=NOW) == {HEX}  # alice's still names it
    assert await assets.live_blobs([HEX, OTHER_HEX], now_ms=NOW + 60_001) == set()  # both expired by then
    again, created = await _upload(assets, "alice", expires_ms=NOW + 120_000)  # the same asset, kept longer
    assert again.id == alice.id and not created
    assert await assets.live_blobs([HEX], now_ms=NOW + 60_001) == {HEX}
    await _upload(assets, "alice")  # and for good
    assert await assets.live_blobs([HEX], now_ms=NOW + 10**9) == {HEX}
    await assets.delete("alice", alice.id)
    assert await assets.live_blobs([HEX, OTHER_HEX], now_ms=NOW + 60_001) == set()
    await assets.forget_blobs([HEX, OTHER_HEX], now_ms=NOW + 60_001)
    assert not await redis_client.exists(Keys("test").blob_assets(HEX), Keys("test").blob_assets(OTHER_HEX))
    assert anyone.owner is None
