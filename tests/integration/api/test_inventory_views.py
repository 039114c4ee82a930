"""Each backend's inventory as the API shows it (api.inventory, api.pool): the pool's summaries with what only one
backend has, ``GET /api/models`` with the backends that hold each model, and an inventory read again on demand."""
from __future__ import annotations

from pathlib import Path

from comfyart.emulator.engine import DEFAULT_MODELS
from tests.support.daemon import make_settings, running_daemon, wait_for_pool

ADMIN_KEY = "inv-admin-key-0123456789abcdef"
CLIENT_KEY = "inv-client-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
# every emulator also holds the files the web editor's default workflow loads
SHARED_DEFAULTS = {name: folder for folder, names in DEFAULT_MODELS.items() for name in names}


def two_emulators(tmp_path: Path, redis_url: str, emulator, *more: dict):
    one = emulator("--checkpoints", "one.safetensors,shared.safetensors")
    two = emulator("--checkpoints", "two.safetensors,shared.safetensors", "--without-nodes", "ImageInvert")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "one", "url": one.url},
                                                                   {"name": "two", "url": two.url}, *more],
                             pool={"inventory_refresh_s": 0},  # read on start and on demand only
                             auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                            {"name": "user", "key": CLIENT_KEY}]})
    return one, two, settings


def all_read(pool) -> bool:
    return sum(b["inventory"]["read"] for b in pool["backends"]) == 2


async def test_the_pool_shows_what_each_backend_alone_has(tmp_path: Path, redis_url, emulator):
    _, _, settings = two_emulators(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        api.headers.update(ADMIN)
        pool = await wait_for_pool(api, all_read)
    one, two = sorted(pool["backends"], key=lambda b: b["id"])
    assert one["id"] == "static:one" and two["id"] == "static:two"
    for backend, model in ((one, "one.safetensors"), (two, "two.safetensors")):
        summary = backend["inventory"]
        assert summary["listed"] and summary["read_ms"] > 0 and summary["error"] is None
        assert summary["models"] == 2 + len(SHARED_DEFAULTS) and summary["nodes"] > 10 and summary["shared_with"] == 0
        assert summary["only_here"]["models"] == [model] and summary["only_here"]["more_models"] == 0
    assert one["inventory"]["only_here"]["nodes"] == ["ImageInvert"] and two["inventory"]["only_here"]["nodes"] == []
    assert one["inventory"]["nodes"] == two["inventory"]["nodes"] + 1
    assert one["inventory"]["digest"] != two["inventory"]["digest"]


async def test_models_lists_each_model_with_the_backends_that_hold_it(tmp_path: Path, redis_url, emulator):
    _, _, settings = two_emulators(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        api.headers.update(ADMIN)
        await wait_for_pool(api, all_read)
        admin = (await api.get("/api/models")).json()
        client = (await api.get("/api/models", headers=CLIENT)).json()
        of_two = (await api.get("/api/models", params={"backend": "static:two"})).json()
        found = (await api.get("/api/models", params={"q": "SHARED"}, headers=CLIENT)).json()
        refused = await api.get("/api/models", params={"backend": "static:two"}, headers=CLIENT)
        unknown = await api.get("/api/models", params={"backend": "static:nobody"})
    held = {m["name"]: ([b["id"] for b in m["backends"]], m["kinds"], m["healthy"]) for m in admin["models"]}
    both = ["static:one", "static:two"]
    assert held == {"one.safetensors": (["static:one"], ["checkpoints"], 1),
                    "shared.safetensors": (both, ["checkpoints"], 2),
                    "two.safetensors": (["static:two"], ["checkpoints"], 1),
                    **{name: (both, [folder], 2) for name, folder in SHARED_DEFAULTS.items()}}
    assert admin["count"] == 3 + len(SHARED_DEFAULTS) and admin["unlisted"] == [] and admin["unread"] == []
    assert all(b["status"] == "healthy" and b["mode"] == "active" for m in admin["models"] for b in m["backends"])
    # a client learns which models there are and how many backends hold each, not which backends
    assert [(m["name"], m["held_by"]) for m in client["models"]] == sorted(
        [("one.safetensors", 1), ("shared.safetensors", 2), ("two.safetensors", 1),
         *((name, 2) for name in SHARED_DEFAULTS)])
    assert all("backends" not in m for m in client["models"]) and "unread" not in client
    assert [m["name"] for m in of_two["models"]] == sorted(["shared.safetensors", "two.safetensors",
                                                            *SHARED_DEFAULTS])
    assert [m["name"] for m in found["models"]] == ["shared.safetensors"]
    assert refused.status_code == 403 and "admins" in refused.json()["detail"]
    assert unknown.status_code == 404


async def test_a_model_copied_onto_a_backend_shows_after_its_refresh(tmp_path: Path, redis_url, emulator):
    one, _, settings = two_emulators(tmp_path, redis_url, emulator, {"name": "gone", "url": "http://127.0.0.2:9"})
    async with running_daemon(settings) as api:
        api.headers.update(ADMIN)
        await wait_for_pool(api, lambda p: sum(b["inventory"]["read"] for b in p["backends"]) == 2)
        (one.base_dir / "models" / "checkpoints" / "new.safetensors").write_bytes(b"")
        before = (await api.get("/api/models", params={"q": "new"})).json()
        refreshed = await api.post("/api/pool/backends/static:one/refresh")
        after = (await api.get("/api/models", params={"q": "new"})).json()
        pool = (await api.get("/api/pool")).json()
        # every healthy backend at once: the unhealthy one is not asked
        everyone = (await api.post("/api/pool/refresh")).json()
        down = await api.post("/api/pool/backends/static:gone/refresh")
        unknown = await api.post("/api/pool/backends/static:nobody/refresh")
    assert before["models"] == []
    assert refreshed.status_code == 200, refreshed.text
    answer = refreshed.json()
    assert answer["id"] == "static:one" and answer["inventory"]["models"] == 3 + len(SHARED_DEFAULTS)
    assert sorted(answer["inventory"]["only_here"]["models"]) == ["new.safetensors", "one.safetensors"]
    assert [(m["name"], [b["id"] for b in m["backends"]]) for m in after["models"]] == [
        ("new.safetensors", ["static:one"])]
    assert {b["id"]: b["inventory"]["models"] for b in pool["backends"] if b["inventory"]["read"]} == {
        "static:one": 3 + len(SHARED_DEFAULTS), "static:two": 2 + len(SHARED_DEFAULTS)}
    assert everyone["refreshed"] == 2 and everyone["failed"] == {}
    assert down.status_code == 503
    detail = down.json()["detail"]
    assert detail.startswith("backend static:gone did not list its inventory: ") and "\n" not in detail
    assert unknown.status_code == 404


async def test_the_comfyui_api_lists_every_backends_models(tmp_path: Path, redis_url, emulator):
    """ComfyUI's /models/{folder} and /object_info for the fleet: a checkpoint any backend holds is listed (the
    editor's model library and loaders offer it), as are the node classes only one backend has."""
    _, _, settings = two_emulators(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        api.headers.update(ADMIN)
        await wait_for_pool(api, all_read)
        listed = (await api.get("/models/checkpoints")).json()
        choices = (await api.get("/object_info")).json()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
        assert "ImageInvert" in (await api.get("/object_info")).json()  # only backend one has it
    assert sorted(listed) == ["one.safetensors", "shared.safetensors", "two.safetensors"]
    assert sorted(choices[0]) == sorted(listed)
