"""The CLI as a shell uses it, against a running daemon: options before the command as in git, output piped into a
reader that leaves early, Ctrl-C while waiting, and a task ComfyUI refused shown with its node errors."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from tests.support.cli import run_cli, start_cli
from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port

NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


def settings_for(tmp_path: Path, redis_url: str, backend_url: str):
    return make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": backend_url}],
                         workflows={"directory": str(ROOT / "config" / "workflows")})


async def test_options_before_the_command_and_the_one_after_wins(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.01")
    async with running_daemon(settings_for(tmp_path, redis_url, emu.url)) as api:
        url = str(api.base_url)
        code, out, err = await run_cli("--url", url, "--json", "workflows", "list", env={"COMFYART_URL": NOWHERE})
        assert code == 0 and "text-to-image" in {w["name"] for w in json.loads(out)["workflows"]}, err
        code, out, err = await run_cli("workflows", "--url", url, "list", env={"COMFYART_URL": NOWHERE})
        assert code == 0 and ["text-to-image", "v1"] in [line.split()[:2] for line in out.splitlines()], err
        code, _, err = await run_cli("--url", url, "tasks", "--url", NOWHERE)
        assert code == 2 and f"cannot reach the daemon at {NOWHERE}" in err
        code, out, err = await run_cli("--url", NOWHERE, "tasks", "--url", url)
        assert code == 0 and "(0 of 0)" in out, err
        code, out, err = await run_cli("tasks", env={"COMFYART_URL": url})
        assert code == 0 and "(0 of 0)" in out, err


async def test_a_reader_that_leaves_early_ends_it_quietly(tmp_path: Path, redis_url, emulator):
    """``comfyart workflows show NAME | head``: the reader has gone before the answer is written."""
    emu = emulator("--node-seconds", "0.01")
    async with running_daemon(settings_for(tmp_path, redis_url, emu.url)) as api:
        for args in (["workflows", "show", "text-to-image"], ["tasks", "--json"]):
            reader, writer = os.pipe()
            os.close(reader)
            try:
                process = await start_cli(*args, env={"COMFYART_URL": str(api.base_url)}, stdout=writer)
            finally:
                os.close(writer)
            _, err = await asyncio.wait_for(process.communicate(), 60)
            assert (process.returncode, err.decode()) == (141, ""), args


async def test_ctrl_c_while_waiting_leaves_the_task_running_and_says_so(tmp_path: Path, redis_url, emulator):
    emu = emulator("--node-seconds", "0.5")
    async with running_daemon(settings_for(tmp_path, redis_url, emu.url)) as api:
        graph = tmp_path / "graph.json"
        graph.write_text(json.dumps(text_to_image_graph(steps=2)))
        process = await start_cli("submit", "--prompt", str(graph), "--wait", env={"COMFYART_URL": str(api.base_url)})
        assert process.stderr is not None
        while b"running" not in (line := await asyncio.wait_for(process.stderr.readline(), 30)):
            assert line, "it ended before the task ran"
        process.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130 and "Traceback" not in rest.decode()
        assert "interrupted; task " in rest.decode() and "goes on ('comfyart cancel " in rest.decode()
        listing = (await api.get("/api/tasks")).json()["tasks"]
        assert [t["status"] for t in listing] in (["running"], ["completed"])


async def test_a_task_comfyui_refused_shows_its_node_errors(tmp_path: Path, redis_url, emulator):
    """The graph reaches a backend that has not answered before (so nothing could check it at submission); the
    emulator refuses it as ComfyUI does, and ``comfyart task ID`` shows each node's errors."""
    port = free_port()
    async with running_daemon(settings_for(tmp_path, redis_url, f"http://127.0.0.1:{port}")) as api:
        graph = basic_graph(width=0)
        graph["1"]["inputs"]["color"] = "red"
        graph_file = tmp_path / "graph.json"
        graph_file.write_text(json.dumps(graph))
        env = {"COMFYART_URL": str(api.base_url)}
        code, out, err = await run_cli("submit", "--prompt", str(graph_file), env=env)
        assert code == 0, err
        task_id = out.strip()
        emulator(port=port)
        [record] = await wait_for_tasks(api, [task_id])
        assert record["status"] == "failed" and record["node_errors"]["1"]["class_type"] == "EmptyImage"
        code, out, err = await run_cli("task", task_id, env=env)
        assert code == 0, err
        assert out.splitlines()[-4:] == [
            "node errors:",
            "* EmptyImage 1 (output 3):",
            "  - Value 0 smaller than min of 1: width",
            "  - Failed to convert an input value to a INT value: color, red, invalid literal for int() with base 10: "
            "'red'",
        ]
