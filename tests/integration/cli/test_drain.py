"""``comfyart drain`` against a running daemon over two emulators, run as a process the way a Kubernetes ``preStop``
hook runs it: it returns only once the backend holds no prompt, which took no new one meanwhile; past its timeout it
gives up (exit 1), and the prompt cut off when the backend dies completes on the other one."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from comfyart.clock import now_ms
from tests.support.cli import run_cli, start_cli
from tests.support.daemon import running_daemon, wait_for_pool, wait_for_tasks
from tests.support.drain import DRAINED, SLOW, long_prompt_on_emu0, settings_over, submit


async def test_drain_returns_once_the_backend_holds_no_prompt(tmp_path: Path, redis_url, emulator):
    slow, fast = emulator("--node-seconds", SLOW), emulator("--node-seconds", "0.05")
    async with running_daemon(settings_over(tmp_path, redis_url, slow, fast)) as api:
        long_task = await long_prompt_on_emu0(api)
        # the pod knows its own IP and port, not its backend id
        drain = await start_cli("drain", "--address", f"127.0.0.1:{slow.port}", "--wait", "--timeout", "60",
                                env={"COMFYART_URL": str(api.base_url)})
        await wait_for_pool(api, lambda pool: next(b for b in pool["backends"] if b["id"] == DRAINED)["mode"]
                            == "draining")
        more = await submit(api, range(10, 14))
        assert {r["backend"] for r in await wait_for_tasks(api, more)} == {"static:emu1"}
        assert (await api.get(f"/api/tasks/{long_task}")).json()["status"] == "running"
        assert drain.returncode is None  # the long prompt still runs: the command waits
        out, err = await asyncio.wait_for(drain.communicate(), 30)
        returned_ms = now_ms()
        assert drain.returncode == 0, err.decode()
        assert out.decode().strip() == f"{DRAINED} drained: holds no prompt"
        record = (await api.get(f"/api/tasks/{long_task}")).json()
        assert record["status"] == "completed" and record["backend"] == DRAINED and record["history"] == []
        assert record["finished_ms"] <= returned_ms
        # emu0 took no new prompt while it drained: its history holds the long prompt alone
        assert list(httpx.get(f"{slow.url}/history", timeout=10).json()) == [record["prompt_id"]]
        pool = (await api.get("/api/pool")).json()
        assert next(b for b in pool["backends"] if b["id"] == DRAINED)["mode"] == "draining"


async def test_past_its_timeout_drain_gives_up_and_the_cut_off_prompt_completes_elsewhere(tmp_path: Path, redis_url,
                                                                                        emulator):
    slow, fast = emulator("--node-seconds", SLOW), emulator("--node-seconds", "0.05")
    async with running_daemon(settings_over(tmp_path, redis_url, slow, fast)) as api:
        env = {"COMFYART_URL": str(api.base_url)}
        code, _, err = await run_cli("drain", "--address", "127.0.0.1:1", "--wait", env=env)
        assert code == 2 and err.strip() == "comfyart: no backend at 127.0.0.1:1 (comfyart pool lists them)"
        code, _, err = await run_cli("drain", "--backend", "static:nope", env=env)
        assert code == 2 and "no backend static:nope" in err

        long_task = await long_prompt_on_emu0(api)
        started = time.monotonic()
        code, _, err = await run_cli("drain", "--backend", DRAINED, "--timeout", "1", env=env)
        assert code == 1 and f"comfyart: {DRAINED} still hold(s) 1 prompt(s) after 1 s" in err, err
        assert time.monotonic() - started < 5
        slow.process.kill()  # the grace period is over: Kubernetes kills the pod
        [record] = await wait_for_tasks(api, [long_task], timeout_s=30)
        assert record["status"] == "completed" and record["backend"] == "static:emu1"
        [cut_off] = record["history"]
        assert cut_off["backend"] == DRAINED and cut_off["outcome"] == "backend_lost"
