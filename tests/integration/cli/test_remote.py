"""The CLI against a running daemon (auth on, an emulator backend, the example workflows), run as a process the way
a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.daemon import make_settings, running_daemon
from tests.support.graphs import text_to_image_graph
from tests.support.paths import ROOT

ADMIN_KEY = "cli-admin-key-0123456789abcdef"
CLIENT_KEY = "cli-client-key-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n"


async def cli(url: str, *args: str, key: str = CLIENT_KEY, cwd: Path = ROOT) -> tuple[int, str, str]:
    """``comfyart ARGS`` with the daemon and the key in the environment, as COMFYART_URL and COMFYART_KEY."""
    return await run_cli(*args, env={"COMFYART_URL": url, "COMFYART_KEY": key}, cwd=cwd)


def settings_for(tmp_path: Path, redis_url: str, emulator):
    emu = emulator("--node-seconds", "0.05")
    return make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": emu.url}],
                         workflows={"directory": str(ROOT / "config" / "workflows")},
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                                        {"name": "cli", "key": CLIENT_KEY}]})


async def test_submit_a_workflow_wait_and_get_its_outputs(tmp_path: Path, redis_url, emulator):
    async with running_daemon(settings_for(tmp_path, redis_url, emulator)) as api:
        url = str(api.base_url)
        out_dir = tmp_path / "out"
        code, out, err = await cli(url, "submit", "--workflow", "text-to-image", "--param", "prompt=a red barn",
                                   "--param", "steps=3", "--param", "width=96", "--wait", "--output-dir", str(out_dir))
        assert code == 0, err
        paths = [Path(line) for line in out.split()]
        assert len(paths) == 1 and paths[0].parent == out_dir and paths[0].read_bytes()[:8] == PNG
        progress = [line for line in err.splitlines() if line.startswith("[")]
        assert progress[-1].startswith("[" + "#" * 30 + "]") and "completed" in progress[-1]
        assert any("running" in line for line in progress)  # it showed the run, not only its end
        task_id = paths[0].name.split("_", 1)[0]

        # an image parameter from a file
        code, out, err = await cli(url, "submit", "--workflow", "image-to-image", "--param", f"image=@{paths[0]}",
                                   "--param", "prompt=as an oil painting", "--param", "denoise=0.5", "--wait",
                                   "--output-dir", str(out_dir), "--json")
        assert code == 0, err
        record = json.loads(out)
        assert record["status"] == "completed" and record["params"]["denoise"] == 0.5
        assert Path(record["downloaded"][0]).read_bytes()[:8] == PNG

        code, out, _ = await cli(url, "task", task_id)
        assert code == 0 and f"id: {task_id}" in out and "status: completed" in out and "output: " in out
        code, out, _ = await cli(url, "tasks", "--json")
        assert code == 0 and {t["id"] for t in json.loads(out)["tasks"]} >= {task_id, record["id"]}
        code, out, _ = await cli(url, "tasks", "--status", "completed")
        assert code == 0 and task_id in out and "(2 of 2)" in out


async def test_graphs_cancel_and_refusals(tmp_path: Path, redis_url, emulator):
    async with running_daemon(settings_for(tmp_path, redis_url, emulator)) as api:
        url = str(api.base_url)
        graph_file = tmp_path / "graph.json"
        graph_file.write_text(json.dumps(text_to_image_graph(steps=2)))
        code, out, err = await cli(url, "submit", "--prompt", str(graph_file), "--json")
        assert code == 0, err
        task_id = json.loads(out)["id"]
        code, out, err = await cli(url, "submit", "--prompt", str(graph_file), "--wait", "--output-dir",
                                   str(tmp_path))
        assert code == 0 and Path(out.strip()).read_bytes()[:8] == PNG, err
        code, _, err = await cli(url, "cancel", task_id)
        assert code == 1 and "is already completed" in err
        # an ended task runs again as a new one
        code, out, err = await cli(url, "retry", task_id, "--wait", "--output-dir", str(tmp_path / "again"), "--json")
        assert code == 0, err
        again = json.loads(out)
        assert again["retry_of"] == task_id and again["status"] == "completed" and again["id"] != task_id
        assert Path(again["downloaded"][0]).read_bytes()[:8] == PNG
        code, out, _ = await cli(url, "retry", task_id)
        assert code == 0 and out.strip() != task_id and len(out.strip()) == 26  # the new task's id

        # the daemon's refusals, in one line, with their own exit code
        code, _, err = await cli(url, "pool")
        assert code == 1 and "HTTP 403: this needs an admin key" in err
        code, _, err = await cli(url, "tasks", key="not-a-key-0123456789abcdef")
        assert code == 1 and "HTTP 401" in err
        code, _, err = await cli(url, "submit", "--workflow", "text-to-image", "--param", "nosign")
        assert code == 2 and "write NAME=VALUE" in err
        code, _, err = await cli(url, "submit", "--workflow", "text-to-image", "--param", "steps=many",
                                 "--param", "prompt=x")
        assert code == 1 and "params.steps: must be an integer" in err
        code, _, err = await cli("http://127.0.0.1:9", "tasks")
        assert code == 2 and "cannot reach the daemon" in err

        # an admin manages the pool and workflows
        code, out, err = await cli(url, "pool", key=ADMIN_KEY)
        assert code == 0 and "static:emu" in out and "healthy" in out, err
        assert "vram free " in out and " MiB" in out  # which of the two numbers is which, said
        definition = tmp_path / "wf.json"
        definition.write_text(json.dumps({"graph": text_to_image_graph(),
                                          "params": {"seed": {"type": "int", "target": "3.seed"}}}))
        code, out, err = await cli(url, "workflows", "put", "mine", str(definition), key=ADMIN_KEY)
        assert code == 0 and out.strip() == "mine version 1", err
        code, out, _ = await cli(url, "workflows", "list")
        rows = [line.split() for line in out.splitlines()]
        assert code == 0 and ["mine", "v1", "seed"] in rows and "text-to-image" in out
        code, out, _ = await cli(url, "workflows", "show", "mine")
        assert json.loads(out)["params"]["seed"]["target"] == [{"node": "3", "input": "seed"}]
        shown = tmp_path / "shown.json"
        shown.write_text(out)  # what show printed goes back as it is, under another name
        code, out, err = await cli(url, "workflows", "put", "copy", str(shown), key=ADMIN_KEY)
        assert code == 0 and out.strip() == "copy version 1", err
        code, _, err = await cli(url, "workflows", "rm", "mine")
        assert code == 1 and "403" in err
        code, out, _ = await cli(url, "workflows", "rm", "mine", key=ADMIN_KEY)
        assert code == 0 and "mine deleted" in out


async def test_a_file_it_cannot_read_is_named_with_why_and_no_errno(tmp_path: Path):
    """Refused before any request, so no daemon is needed: the file, the option that named it, and why."""
    missing, directory, broken = tmp_path / "photo.png", tmp_path, tmp_path / "graph.json"
    broken.write_text("{")
    nowhere = "http://127.0.0.1:9"
    cases = [
        (["submit", "--workflow", "image-to-image", "--param", f"image=@{missing}", "--param", "prompt=x"],
         f"comfyart: --param image=@{missing}: cannot read it: no such file or directory"),
        (["submit", "--prompt", str(missing)], f"comfyart: --prompt {missing}: cannot read it: no such file or "
                                                "directory"),
        (["submit", "--prompt", str(directory)], f"comfyart: --prompt {directory}: cannot read it: is a directory"),
        (["submit", "--prompt", str(broken)], f"comfyart: --prompt {broken}: not JSON: Expecting property name "
                                               "enclosed in double quotes: line 1 column 2 (char 1)"),
        (["workflows", "put", "mine", str(missing)], f"comfyart: {missing}: cannot read it: no such file or "
                                                      "directory"),
    ]
    for args, expected in cases:
        code, _, err = await cli(nowhere, *args)
        assert (code, err.strip()) == (2, expected), args
