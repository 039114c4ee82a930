"""``comfyart status`` against a running daemon with its replica registry, run as a process the way a user runs it:
the daemon's health, then (admin key) the leader with its epoch and each replica."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.cluster import running_replica
from tests.support.daemon import make_settings

ADMIN_KEY = "status-admin-key-0123456789abcdef"
CLIENT_KEY = "status-client-key-0123456789abcdef"


async def test_status_shows_health_leader_and_replicas(tmp_path: Path, redis_url, emulator, redis_client):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": emu.url}],
                             auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                            {"name": "app", "key": CLIENT_KEY}]},
                             cluster={"name": "blue-1", "heartbeat_s": 0.2})
    async with running_replica(settings) as (api, daemon):
        await daemon.services.replica.heartbeat.joined.wait()
        term = await asyncio.wait_for(daemon.leadership.acquired(), 10)  # the daemon's own lease, as it leads
        epoch = term.epoch
        assert (await redis_client.get("comfyart:leader")).split()[:2] == ["blue-1", str(epoch)]
        env = {"COMFYART_URL": str(api.base_url), "COMFYART_KEY": ADMIN_KEY}

        code, out, err = await run_cli("status", env=env)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("daemon ok  backends 1 (") and "queue 0" in lines[0]
        assert lines[1].startswith(f"leader blue-1  epoch {epoch}  since ") and "s ago)" in lines[1]
        assert lines[2].split()[:4] == ["REPLICA", "ROLE", "VERSION", "HEARTBEAT"]
        assert lines[3].split()[:4] == ["blue-1", "*", "leader", "0.1.0"]

        code, out, _ = await run_cli("status", "--json", env=env)
        assert code == 0 and json.loads(out)["cluster"]["leader"]["epoch"] == epoch

        code, out, err = await run_cli("status", env={**env, "COMFYART_KEY": CLIENT_KEY})
        assert code == 0, err
        assert out.splitlines()[1:] == ["replicas: an admin key sees them (--key)"]
