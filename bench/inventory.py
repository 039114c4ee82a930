"""Inventory benchmark (issue 21): what knowing each backend's nodes and models costs, and what it buys.

    python3 bench/inventory.py [--quick] [--only needs_check,memory,mixed_batch]

1. needs_check  in-process, 64 backends: CPU of ``policy.scheduling.assign`` per task placed, for tasks whose needs
                carry node classes and combo values against backends with inventories (4 distinct inventories,
                then 64), against the same tasks with tags and VRAM only: the difference is the needs check.
                A burst (64 idle backends, 128 queued, prefetch 1) and the steady state (one free slot, a window
                of 33; also on 1,000 backends). ``Inventory.missing`` cold and warm; decoding a task's needs.
2. memory       64 servers answering a 2 MB ``/object_info`` (bench/object_info_fleet.py), all the same document
                or each its own model lists: what ``comfyart.pool.inventory.Inventories`` keeps after reading them
                all through its own ``read`` (tracemalloc, after gc), then with the merged ``/object_info`` built.
3. mixed_batch  8 emulators that take --model-load seconds to switch checkpoint, 200 tasks over 4 checkpoints:
                every backend holds every checkpoint (uniform), each checkpoint on 2 backends (partitioned), each
                backend 2 of the 4 (overlapping); least_busy and affinity: makespan, model loads (the emulators'
                own counts), and whether every task ran where its checkpoint is.

Prints a table and writes bench/results/inventory.json (inventory-quick.json with --quick).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from loguru import logger

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
from object_info_fleet import COMMON, document, embeddings, pool  # noqa: E402
from pipeline import RESULTS  # noqa: E402
from scheduling import (  # noqa: E402
    CHECKPOINTS,
    Bench,
    default_workdir,
    free_port_block,
    post_tasks,
    records,
    register,
    sampler_graph,
    wait_all,
)

from comfyart.comfy.client import ComfyClient  # noqa: E402
from comfyart.comfy.inventory import graph_needs, read_inventory  # noqa: E402
from comfyart.config.fleet import PoolConfig, StaticBackendConfig  # noqa: E402
from comfyart.policy.inventory import Inventory  # noqa: E402
from comfyart.policy.needs import Needs, graph_cost, graph_models, needs_of_record, needs_record  # noqa: E402
from comfyart.policy.scheduling import BackendSlot, PoolView, QueuedTask, Strategy, assign, could_run  # noqa: E402
from comfyart.pool.inventory import Inventories  # noqa: E402
from comfyart.pool.registry import Pool  # noqa: E402

BACKENDS, GIB, MB = 64, 1 << 30, 1 << 20


# ---------------------------------------------------------------------------------------------------- 1
def lora_graph(seed: int, checkpoint: str, lora: str) -> dict:
    """The text-to-image graph with a LoRA between the checkpoint and the sampler."""
    graph = sampler_graph(seed, 20, checkpoint)
    graph["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora,
                                                          "strength_model": 0.8, "strength_clip": 0.8}}
    graph["3"]["inputs"]["model"] = ["10", 0]
    return graph


def task_records(count: int, combos: Any) -> tuple[list[dict], list[dict]]:
    """``count`` task records over 8 distinct needs (4 checkpoints, with and without a LoRA), with their inventory
    needs and without (tags and VRAM only), as submission stores them."""
    graphs = [sampler_graph(0, 20, ckpt) for ckpt in CHECKPOINTS]
    graphs += [lora_graph(0, ckpt, pool("loras")[i]) for i, ckpt in enumerate(CHECKPOINTS)]
    full, plain = [], []
    for graph in graphs:
        nodes, values = graph_needs(graph, combos)
        needs = Needs(frozenset({"gpu"}), 8 * GIB, graph_models(graph), nodes, values)
        full.append(needs_record(needs, graph_cost(graph)))
        plain.append(needs_record(Needs(needs.tags, needs.vram, needs.models), graph_cost(graph)))
    # through JSON, as dispatch reads them: every task its own Needs, equal to others but not the same object
    return ([json.loads(json.dumps(full[i % 8])) for i in range(count)],
            [json.loads(json.dumps(plain[i % 8])) for i in range(count)])


def queued(records_: Sequence[dict]) -> list[QueuedTask]:
    return [QueuedTask(f"t{i}", needs=needs_of_record(r)[0], cost=needs_of_record(r)[1], created_ms=i)
            for i, r in enumerate(records_)]


def slots(inventories: Sequence[Inventory], inflight: Callable[[int], int], loaded: Sequence[Needs],
          count: int = BACKENDS) -> list:
    return [BackendSlot(f"b{i}", inflight(i), tags=frozenset({"gpu"}), vram_total=24 * GIB, vram_free=20 * GIB,
                        models=loaded[i % len(loaded)].models, inventory=inventories[i % len(inventories)])
            for i in range(count)]


def cpu_samples(run: Callable[[], Any], reps: int, before: Callable[[], None] = lambda: None) -> list[float]:
    """CPU seconds of each of ``reps`` calls of ``run`` (``before`` runs first, untimed)."""
    samples = []
    for _ in range(reps):
        before()
        start = time.process_time()
        run()
        samples.append(time.process_time() - start)
    return samples


def figures(samples: Sequence[float], per: int) -> dict[str, float]:
    """µs per item: the median and the 10th-90th percentiles of the samples."""
    ordered = sorted(s / per * 1e6 for s in samples)
    return {"median": round(statistics.median(ordered), 2), "p10": round(ordered[len(ordered) // 10], 2),
            "p90": round(ordered[len(ordered) * 9 // 10], 2)}


def clear_verdicts(inventories: Sequence[Inventory]) -> Callable[[], None]:
    """Each inventory's remembered verdicts forgotten (a round right after they changed, or of new needs)."""
    def clear() -> None:
        for inventory in inventories:
            inventory._verdicts.clear()
    return clear


WINDOWS = {  # name: (each backend's prompts in flight, tasks in the window)
    "burst": (lambda i: 0, 128),  # every backend idle, 128 tasks queued: 128 placed in one round
    "steady": (lambda i: 1 if i == 17 else 2, 33),  # one slot free, window = 1 + lookahead 32: 1 placed
}


def layouts() -> dict[str, list[Inventory]]:
    """4 distinct inventories (each on 16 backends), and 64 (each backend its own model lists)."""
    shared = [read_inventory(document(i), f"d{i}", embeddings(i)) for i in range(4)]
    return {"shared_4": shared,
            "different_64": shared + [read_inventory(document(i), f"d{i}", embeddings(i)) for i in range(4, BACKENDS)]}


def window_costs(tasks: list[QueuedTask], plain: list[QueuedTask], inventories: dict[str, list[Inventory]],
                 window: str, strategy: Strategy, reps: int, backends: int = BACKENDS) -> dict[str, Any]:
    """µs of ``assign`` per task placed, plain needs against inventory needs (verdicts remembered, and not), on
    ``backends`` backends that take the inventories in turn."""
    inflight, size = WINDOWS[window]
    loaded = [t.needs for t in tasks[:8]]  # the models each backend has loaded: what affinity matches

    kept: dict[Needs, frozenset[str]] = {}

    def placing(window_tasks: list[QueuedTask], board: list[BackendSlot]) -> Callable[[], list]:
        """A round as the dispatcher runs it: ``assign`` gets the backends with a free slot (``Pool.open_slots``)
        and the pool's view, whose answer to which backends could run what is kept until the pool changes."""
        free = [b for b in board if b.inflight < 2]

        def could_run_kept(needs: Needs) -> frozenset[str]:
            if needs not in kept:
                kept[needs] = frozenset(could_run(needs, board))
            return kept[needs]
        view = PoolView(could_run_kept, lambda _: True)
        kept.clear()
        return lambda: assign(window_tasks, free, strategy=strategy, prefetch=1, waiting=10_000, view=view)

    def forgetting(layout_inventories: list[Inventory]) -> Callable[[], None]:
        forget = clear_verdicts(layout_inventories)
        return lambda: (forget(), kept.clear())  # type: ignore[func-returns-value]

    run_plain = placing(plain[:size], slots(inventories["shared_4"], inflight, loaded, backends))
    expected = run_plain()
    entry: dict[str, Any] = {"placed": len(expected), "plain": figures(cpu_samples(run_plain, reps), len(expected))}
    for layout, layout_inventories in inventories.items():
        run = placing(tasks[:size], slots(layout_inventories, inflight, loaded, backends))
        assert run() == expected, "the needs check changed where tasks went"
        warm = figures(cpu_samples(run, reps), len(expected))
        cold = figures(cpu_samples(run, max(3, reps // 4), forgetting(layout_inventories)), len(expected))
        entry[layout] = {"warm": warm, "cold": cold,
                         "check_us_per_task": round(warm["median"] - entry["plain"]["median"], 2),
                         "check_us_per_task_cold": round(cold["median"] - entry["plain"]["median"], 2)}
    return entry


def needs_check(reps: int) -> dict[str, Any]:
    inventories = layouts()
    combos = frozenset(c for inv in inventories["different_64"] for c in inv.choices)
    full, plain = task_records(128, combos)
    tasks, plain_tasks = queued(full), queued(plain)
    result: dict[str, Any] = {"backends": BACKENDS, "distinct_needs": 8, "nodes_per_task": len(tasks[0].needs.nodes),
                              "values_per_task": len(tasks[0].needs.values), "reps": reps}
    gc.collect()
    gc.freeze()  # as the daemon does once serving: the inventories' objects are not walked at every collection
    try:
        for window in WINDOWS:
            for strategy in (Strategy.LEAST_BUSY, Strategy.AFFINITY):
                result[f"{window}_{strategy.value}"] = window_costs(tasks, plain_tasks, inventories, window,
                                                                    strategy, reps)
        # the scale section's fleet: the same per-round work grows with the backends
        result["steady_least_busy_1000_backends"] = window_costs(tasks, plain_tasks, inventories, "steady",
                                                                 Strategy.LEAST_BUSY, max(3, reps // 4), 1000)
        result["missing"] = missing_costs(inventories["different_64"][5], tasks[:8], reps)
        result["decode_needs_us_per_task"] = {
            kind: figures(cpu_samples(lambda rs=rs: [needs_of_record(r) for r in rs], reps), len(rs))["median"]
            for kind, rs in (("plain", plain), ("inventory", full))}
    finally:
        gc.unfreeze()
    return result


def missing_costs(inventory: Inventory, tasks: Sequence[QueuedTask], reps: int) -> dict[str, Any]:
    """``Inventory.missing``: a first answer (cold), a remembered one (warm), and a first answer that finds
    something missing (a checkpoint this backend lacks)."""
    needs = [t.needs for t in tasks]
    lacked = next(c for c in pool("checkpoints")[COMMON:] if c not in inventory.choices[("CheckpointLoaderSimple",
                                                                                          "ckpt_name")])
    lacking = [Needs(n.tags, n.vram, n.models, n.nodes | {"SaveVideo"},
                     frozenset((c, i, lacked if i == "ckpt_name" else v) for c, i, v in n.values)) for n in needs]
    forget = clear_verdicts([inventory])
    calls = 1000
    return {"cold_us": figures(cpu_samples(lambda: [inventory.missing(n) for n in needs], reps, forget),
                               len(needs))["median"],
            "cold_lacking_us": figures(cpu_samples(lambda: [inventory.missing(n) for n in lacking], reps, forget),
                                       len(lacking))["median"],
            "warm_us": figures(cpu_samples(lambda: [inventory.missing(needs[i % 8]) for i in range(calls)], reps),
                               calls)["median"],
            "lacking_says": list(inventory.missing(lacking[0]))}


# ---------------------------------------------------------------------------------------------------- 2
async def retained(urls: list[str]) -> dict[str, Any]:
    """Every server's inventory read through ``Inventories.read`` (as the health check does): what stays allocated
    afterwards (tracemalloc, after gc; the HTTP session closed), then with the merged ``/object_info`` built."""
    logger.remove()  # the reads' own log lines
    tracemalloc.start()
    async with aiohttp.ClientSession() as session:
        config = PoolConfig(min_containers=0)
        fleet = Pool(config=config, providers=[], connect=lambda url: ComfyClient(session, url, timeout_s=120))
        backends = [fleet.add_static(StaticBackendConfig(name=f"b{i}", url=url), "config")
                    for i, url in enumerate(urls)]
        inventories = Inventories(fleet, config)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.monotonic()
        read = await inventories.refresh(backends)
        read_s = time.monotonic() - started
        assert all(inventory is not None for inventory in read), "a server did not answer"
    gc.collect()
    after_read, peak = tracemalloc.get_traced_memory()
    merged = await inventories.merged()
    assert merged is not None
    gc.collect()
    after_merge = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"backends": len(urls), "reads": inventories.reads, "parses": inventories.parses,
            "distinct_inventories": len(inventories.distinct()),
            "document_mb": round(len(json.dumps(document(0))) / MB, 2),
            "compressed_documents_mb": round(sum(map(len, inventories._documents.values())) / MB, 2),
            "inventories_mb": round((after_read - base) / MB, 1),
            "with_merged_object_info_mb": round((after_merge - base) / MB, 1),
            "merged_object_info_json_mb": round(len(json.dumps(merged.object_info)) / MB, 2),
            "peak_while_reading_mb": round((peak - base) / MB, 1),
            "read_all_s_under_tracemalloc": round(read_s, 1)}


def memory(bench: Bench, count: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind in ("same", "different"):
        port = free_port_block(count)
        bench.spawn([sys.executable, str(BENCH / "object_info_fleet.py"), "--port", str(port), "--count",
                     str(count), "--kind", kind], port + count - 1)
        result[kind] = asyncio.run(retained([f"http://127.0.0.1:{port + i}" for i in range(count)]))
    return result


# ---------------------------------------------------------------------------------------------------- 3
FLEETS = {  # each backend's checkpoints
    "uniform": [CHECKPOINTS] * 8,
    "partitioned": [[CHECKPOINTS[i // 2]] for i in range(8)],
    "overlapping": [[CHECKPOINTS[i % 4], CHECKPOINTS[(i + 1) % 4]] for i in range(8)],
}
STEP_S = 0.03  # 3 steps: a task runs 0.09 s, plus the load when its backend switches checkpoint


def emulators(bench: Bench, holdings: list[list[str]], load_s: float) -> list[tuple[str, list[str]]]:
    """One emulator per entry of ``holdings``, holding those checkpoints: one fleet process per distinct list."""
    urls: dict[int, str] = {}
    for held in {tuple(h) for h in holdings}:
        where = [i for i, h in enumerate(holdings) if tuple(h) == held]
        started = bench.fleet(len(where), len(where), "--checkpoints", ",".join(held), "--step-seconds", str(STEP_S),
                              "--model-load-seconds", str(load_s))
        urls.update(zip(where, started, strict=True))
    return [(urls[i], holdings[i]) for i in range(len(holdings))]


def model_loads(urls: Sequence[str]) -> int:
    return sum(httpx.get(f"{url}/emulator/stats", timeout=30).json()["model_loads"] for url in urls)


def listed_pool(api: str, count: int) -> dict[str, str]:
    """Once every backend is healthy with its inventory read: backend id -> URL."""
    deadline = time.monotonic() + 60
    while True:
        backends = httpx.get(f"{api}/api/pool", timeout=30).json()["backends"]
        if sum(b["status"] == "healthy" and b["inventory"]["read"] for b in backends) >= count:
            return {b["id"]: b["url"] for b in backends}
        if time.monotonic() > deadline:
            raise TimeoutError("backends not healthy with their inventories")
        time.sleep(0.1)


def set_mode(api: str, ids: Sequence[str], action: str) -> None:
    with ThreadPoolExecutor(len(ids)) as threads:
        answers = list(threads.map(lambda i: httpx.post(f"{api}/api/pool/backends/{i}/{action}", timeout=30), ids))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]


def batch_run(bench: Bench, redis_url: str, fleet: list[tuple[str, list[str]]], wanted: list[str],
              strategy: str, label: str) -> dict[str, Any]:
    """The batch through a new daemon: the backends listed, then held while the batch is queued (its needs worked
    out against their inventories), then all let go at once."""
    urls = [url for url, _ in fleet]
    for url in urls:
        # free_memory too: a cached CheckpointLoaderSimple output would not run, and load, again
        httpx.post(f"{url}/free", json={"unload_models": True, "free_memory": True}, timeout=30)
        httpx.post(f"{url}/history", json={"clear": True}, timeout=30)
    loads_before = model_loads(urls)
    process, api = bench.empty_daemon(redis_url, f"mixed-{label}-{strategy}", scheduler={"strategy": strategy})
    register(api, urls)
    url_of = listed_pool(api, len(urls))
    set_mode(api, list(url_of), "disable")
    ids = post_tasks(api, [{"prompt": sampler_graph(7000 + i, 3, ckpt)} for i, ckpt in enumerate(wanted)])
    started = time.monotonic()
    set_mode(api, list(url_of), "enable")
    wait_all(api, len(ids))
    span = time.monotonic() - started
    done = records(api, ids)
    held = dict(fleet)
    misplaced = sum(ckpt not in held[url_of[r["backend"]]] for r, ckpt in zip(done, wanted, strict=True))
    process.terminate()
    process.wait(20)
    return {"makespan_s": round(span, 2), "model_loads": model_loads(urls) - loads_before,
            "misplaced": misplaced, "submitted_again": sum(r["attempts"] > 1 for r in done)}


def mixed_batch(bench: Bench, redis_url: str, count: int, load_s: float) -> dict[str, Any]:
    rng = random.Random(5)
    wanted = [rng.choice(CHECKPOINTS) for _ in range(count)]
    result: dict[str, Any] = {"tasks": count, "backends": 8, "checkpoints": 4, "model_load_s": load_s,
                              "task_s_without_load": round(3 * STEP_S, 3),
                              "work_per_backend_s": round(count * 3 * STEP_S / 8, 2)}
    for label, holdings in FLEETS.items():
        fleet = emulators(bench, holdings, load_s)
        result[label] = {strategy: batch_run(bench, redis_url, fleet, wanted, strategy, label)
                         for strategy in ("least_busy", "affinity")}
    return result


# ---------------------------------------------------------------------------------------------------- main
SECTIONS = ("needs_check", "memory", "mixed_batch")


def run_section(section: str, quick: bool, workdir: str | None) -> dict[str, Any]:
    if section == "needs_check":
        return needs_check(20 if quick else 200)
    bench = Bench(Path(tempfile.mkdtemp(prefix="comfyart-bench-", dir=workdir)))
    try:
        if section == "memory":
            return memory(bench, 8 if quick else BACKENDS)
        return mixed_batch(bench, bench.redis(), 60 if quick else 200, 0.5)
    finally:
        bench.close()
        shutil.rmtree(bench.workdir, ignore_errors=True)


def rows(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for key, sub in value.items() for row in rows(f"{prefix}.{key}" if prefix else key, sub)]
    return [(prefix, value)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks, backends and repetitions (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--workdir", default=default_workdir(), help="where emulators and daemons keep their files")
    args = parser.parse_args()
    wanted = [s for s in args.only.split(",") if s]
    if set(wanted) - set(SECTIONS):
        parser.error(f"no section {', '.join(sorted(set(wanted) - set(SECTIONS)))}")
    results: dict[str, Any] = {}
    for section in wanted:
        started = time.monotonic()
        results[section] = run_section(section, args.quick, args.workdir)
        results[section]["bench_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps({section: results[section]}), flush=True)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "quick": args.quick}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("inventory-quick.json" if args.quick else "inventory.json")
    earlier = json.loads(path.read_text()) if path.exists() else {}  # --only keeps the other sections' figures
    path.write_text(json.dumps({**earlier, **results}, indent=2))
    print(f"\n{'figure':<60} value")
    print("\n".join(f"{key:<60} {value}" for section in wanted for key, value in rows(section, results[section])))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
