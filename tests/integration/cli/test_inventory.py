"""``comfyart models`` and ``comfyart pool refresh [ID]`` against a daemon with two emulators that hold different
checkpoints, run as a process the way a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

from comfyart.emulator.engine import DEFAULT_MODELS
from tests.support.cli import run_cli
from tests.support.daemon import make_settings, running_daemon, wait_for_pool

ADMIN_KEY = "cli-inv-admin-key-0123456789abcdef"
CLIENT_KEY = "cli-inv-client-key-0123456789abcdef"
# every emulator also holds the files the web editor's default workflow loads
SHARED_DEFAULTS = {name: folder for folder, names in DEFAULT_MODELS.items() for name in names}


async def cli(url: str, *args: str, key: str = ADMIN_KEY) -> tuple[int, str, str]:
    return await run_cli(*args, env={"COMFYART_URL": url, "COMFYART_KEY": key})


async def test_models_and_pool_refresh(tmp_path: Path, redis_url, emulator):
    one = emulator("--checkpoints", "one.safetensors,shared.safetensors")
    two = emulator("--checkpoints", "shared.safetensors", "--without-nodes", "ImageInvert")
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "one", "url": one.url},
                                                                   {"name": "two", "url": two.url}],
                             pool={"inventory_refresh_s": 0},
                             auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                            {"name": "cli", "key": CLIENT_KEY}]})
    async with running_daemon(settings) as api:
        api.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        await wait_for_pool(api, lambda p: all(b["inventory"]["read"] for b in p["backends"]))
        url = str(api.base_url)

        code, out, err = await cli(url, "models")
        assert code == 0, err
        rows = [line.split() for line in out.splitlines()]
        both = ["static:one,", "static:two"]
        assert rows == [["MODEL", "KIND", "WHERE"], *sorted(
            [["one.safetensors", "checkpoints", "static:one"], ["shared.safetensors", "checkpoints", *both],
             *([name, folder, *both] for name, folder in SHARED_DEFAULTS.items())])]
        code, out, _ = await cli(url, "models", key=CLIENT_KEY)  # a client: how many hold it, not which
        rows = [line.split() for line in out.splitlines()]
        assert code == 0 and "static:" not in out
        assert ["shared.safetensors", "checkpoints", "2", "backend(s),", "2", "healthy"] in rows
        code, out, _ = await cli(url, "models", "--backend", "static:two", "--json")
        assert code == 0 and [m["name"] for m in json.loads(out)["models"]] == sorted(
            ["shared.safetensors", *SHARED_DEFAULTS])
        code, out, _ = await cli(url, "models", "--find", "ONE")
        assert code == 0 and "one.safetensors" in out and "shared" not in out

        # the pool shows each backend's inventory; a file copied onto one shows once it is read again
        code, out, _ = await cli(url, "pool")
        assert code == 0 and "only here: one.safetensors, ImageInvert" in out, out
        (two.base_dir / "models" / "checkpoints" / "two.safetensors").write_bytes(b"")
        code, out, err = await cli(url, "pool", "refresh", "static:two")
        assert code == 0 and out.startswith("static:two: inventory: "), err
        assert f"{2 + len(SHARED_DEFAULTS)} models" in out
        assert "only here: two.safetensors" in out
        code, out, err = await cli(url, "pool", "refresh", "--json")
        assert code == 0 and json.loads(out)["refreshed"] == 2, err
        code, out, _ = await cli(url, "pool", "refresh")
        assert code == 0 and out.splitlines()[-1] == "(2 read, 0 failed)"
        code, _, err = await cli(url, "pool", "refresh", "static:nobody")
        assert code == 1 and "HTTP 404: no backend static:nobody" in err
        code, _, err = await cli(url, "pool", "refresh", key=CLIENT_KEY)
        assert code == 1 and "HTTP 403" in err
