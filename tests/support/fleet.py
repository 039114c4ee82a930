"""Heterogeneous fleets for tests (issue 21): emulators that differ in their checkpoints and node classes, graphs
that ask for a checkpoint or a node class, and what a test reads back (where each model is, what the scheduler
says is blocked, how many models each emulator loaded)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from tests.support.daemon import wait_for_pool
from tests.support.emulator import EmulatorProcess
from tests.support.graphs import text_to_image_graph


def start_fleet(emulator: Callable[..., EmulatorProcess], checkpoints: Sequence[Sequence[str]],
                without_nodes: Sequence[Sequence[str]] = (), *timing: str) -> list[EmulatorProcess]:
    """One emulator per entry of ``checkpoints`` (its model files), less the node classes of the same entry of
    ``without_nodes``; ``timing``: more arguments for each (``--step-seconds``, ...)."""
    fleet = []
    for i, names in enumerate(checkpoints):
        left_out = without_nodes[i] if i < len(without_nodes) else ()
        args = ["--checkpoints", ",".join(names), *timing]
        if left_out:
            args += ["--without-nodes", ",".join(left_out)]
        fleet.append(emulator(*args))
    return fleet


def named(fleet: Sequence[EmulatorProcess]) -> list[dict[str, str]]:
    """The ``static_backends`` section for ``fleet``: emu0, emu1, ... (backend ids ``static:emu0``, ...)."""
    return [{"name": f"emu{i}", "url": e.url} for i, e in enumerate(fleet)]


def holders(checkpoints: Sequence[Sequence[str]]) -> dict[str, set[str]]:
    """Each model name -> the ids of the backends ``named`` gives the emulators that hold it."""
    where: dict[str, set[str]] = {}
    for i, names in enumerate(checkpoints):
        for name in names:
            where.setdefault(name, set()).add(f"static:emu{i}")
    return where


def checkpoint_graph(checkpoint: str, seed: int = 1, steps: int = 1) -> dict[str, Any]:
    """Text to image with ``checkpoint`` (a distinct ``seed`` keeps the emulator from answering from its cache)."""
    graph = text_to_image_graph(seed=seed, steps=steps)
    graph["4"]["inputs"]["ckpt_name"] = checkpoint
    return graph


def checkpoint_and_nodes_graph(checkpoint: str, seed: int = 1) -> dict[str, Any]:
    """Text to image with ``checkpoint``, its image inverted (ImageInvert) and noised (ImageAddNoise) before saving:
    a graph that needs a model and two node classes."""
    graph = checkpoint_graph(checkpoint, seed)
    graph["10"] = {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}}
    graph["11"] = {"class_type": "ImageAddNoise", "inputs": {"image": ["10", 0], "seed": seed, "strength": 0.1}}
    graph["9"]["inputs"]["images"] = ["11", 0]
    return graph


async def all_healthy(api: httpx.AsyncClient, count: int, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until ``count`` backends are healthy (each read its inventory before it became so)."""
    return await wait_for_pool(api, lambda p: sum(b["status"] == "healthy" for b in p["backends"]) == count,
                               timeout_s=timeout_s)


async def submit(api: httpx.AsyncClient, graph: dict[str, Any], **fields: Any) -> str:
    answer = await api.post("/api/tasks", json={"prompt": graph, **fields})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def blocked_reason(api: httpx.AsyncClient, task_id: str, *, timeout_s: float = 10.0) -> str:
    """The reason GET /api/scheduler gives for ``task_id`` under ``blocked``, once it lists it there."""
    deadline = time.monotonic() + timeout_s
    while True:
        scheduler = (await api.get("/api/scheduler")).json()
        reasons = {entry["task"]: entry["reason"] for entry in scheduler["blocked"]}
        if task_id in reasons:
            return str(reasons[task_id])
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not listed as blocked after {timeout_s} s: {scheduler['blocked']}")
        await asyncio.sleep(0.1)


def model_loads(fleet: Sequence[EmulatorProcess]) -> int:
    """Checkpoint changes all the emulators of ``fleet`` made (each counts one when CheckpointLoaderSimple is given
    another checkpoint than the one it has loaded)."""
    return sum(httpx.get(f"{e.url}/emulator/stats", timeout=10).json()["model_loads"] for e in fleet)


def copy_model(emu: EmulatorProcess, name: str) -> None:
    """A checkpoint copied onto ``emu`` (the emulator lists it from its next request on)."""
    (emu.base_dir / "models" / "checkpoints" / name).write_bytes(b"")


def remove_model(emu: EmulatorProcess, name: str) -> None:
    """A checkpoint deleted from ``emu`` behind comfyart's back."""
    (emu.base_dir / "models" / "checkpoints" / name).unlink()
