"""Draining by address with only an HTTP client (api.drain), as a ``preStop`` hook without comfyart installed runs
it: ``POST /api/pool/drain?address=`` then ``GET /api/pool/drained?address=&wait_s=``, which answers once the
backend holds no prompt, or 409 past its wait."""
from __future__ import annotations

from pathlib import Path

from comfyart.clock import now_ms
from tests.support.daemon import running_daemon, wait_for_tasks
from tests.support.drain import DRAINED, SLOW, long_prompt_on_emu0, settings_over, submit


async def test_drain_by_address_then_wait_until_it_holds_no_prompt(tmp_path: Path, redis_url, emulator):
    slow, fast = emulator("--node-seconds", SLOW), emulator("--node-seconds", "0.05")
    async with running_daemon(settings_over(tmp_path, redis_url, slow, fast)) as api:
        refused = await api.post("/api/pool/drain", params={"address": "127.0.0.1"})
        assert refused.status_code == 422 and "HOST:PORT" in refused.json()["detail"]
        assert (await api.post("/api/pool/drain", params={"address": "127.0.0.1:1"})).status_code == 404
        assert (await api.get("/api/pool/drained", params={"address": "127.0.0.1:1"})).status_code == 404

        long_task = await long_prompt_on_emu0(api)
        address = {"address": f"127.0.0.1:{slow.port}"}
        found = (await api.get("/api/pool/backends", params=address)).json()["backends"]
        assert [b["id"] for b in found] == [DRAINED]
        drained = await api.post("/api/pool/drain", params=address)
        assert drained.status_code == 200 and [(b["id"], b["mode"]) for b in drained.json()["backends"]] \
            == [(DRAINED, "draining")]
        busy = await api.get("/api/pool/drained", params={**address, "wait_s": 0.5})
        assert busy.status_code == 409 and f"{DRAINED} holds 1 prompt(s)" in busy.json()["detail"]
        more = await submit(api, range(30, 32))  # meanwhile, new work goes to emu1

        done = await api.get("/api/pool/drained", params={**address, "wait_s": 30}, timeout=40)
        answered_ms = now_ms()
        assert done.status_code == 200 and done.json()["drained"] is True
        assert done.json()["backends"][DRAINED]["inflight"] == 0
        record = (await api.get(f"/api/tasks/{long_task}")).json()
        assert record["status"] == "completed" and record["finished_ms"] <= answered_ms
        assert {r["backend"] for r in await wait_for_tasks(api, more)} == {"static:emu1"}
