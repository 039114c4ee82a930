"""The ComfyUI-compatible front door: what a ComfyUI client pays for going through comfyart.

    python3 bench/front_door.py [--count N]

A client posts one prompt at a time and waits on its WebSocket for the end marker (``executing`` with node
null), first straight at an emulator, then at ``comfyart serve`` in front of an identical emulator. Reports the
round trip p50/p99 of each, the latency the front door adds, and whether both sockets received the same frame types
in the same order. Prints a table and writes bench/results/front_door.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, Rig, graph, percentile  # noqa: E402


async def round_trips(base: str, count: int, offset: int) -> tuple[list[float], list[list[str]]]:
    """Seconds from POST /prompt to the end marker, and the frame types each prompt's socket received."""
    times, sequences = [], []
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{base.replace('http', 'ws')}/ws?clientId=bench") as ws:
        await ws.receive()
        for i in range(count):
            start = time.perf_counter()
            async with session.post(f"{base}/prompt", json={"prompt": graph(offset + i),
                                                            "client_id": "bench"}) as answer:
                prompt_id = (await answer.json())["prompt_id"]
            kinds = []
            while True:
                message = await ws.receive(timeout=60)
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame["data"].get("prompt_id") == prompt_id:
                    kinds.append(frame["type"])
                if frame["type"] == "executing" and frame["data"].get("node") is None \
                        and frame["data"].get("prompt_id") == prompt_id:
                    break
            times.append(time.perf_counter() - start)
            sequences.append(kinds)
    return times, sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-bench-front-")))
    try:
        redis_url = rig.redis()
        direct_url, behind_url = rig.emulator(0.0), rig.emulator(0.0)
        _, api = rig.daemon(redis_url, [behind_url], "front", scheduler={"prefetch": 0})
        direct, direct_kinds = asyncio.run(round_trips(direct_url, args.count, 0))
        through, through_kinds = asyncio.run(round_trips(api, args.count, 100_000))
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    added = sorted(t - d for t, d in zip(sorted(through), sorted(direct), strict=True))
    result: dict[str, Any] = {
        "prompts": args.count,
        "direct_ms_p50": round(percentile(direct, 0.5) * 1000, 1),
        "direct_ms_p99": round(percentile(direct, 0.99) * 1000, 1),
        "front_door_ms_p50": round(percentile(through, 0.5) * 1000, 1),
        "front_door_ms_p99": round(percentile(through, 0.99) * 1000, 1),
        "added_ms_p50": round(percentile(added, 0.5) * 1000, 1),
        "added_ms_p99": round(percentile(added, 0.99) * 1000, 1),
        "same_frame_sequence": direct_kinds == through_kinds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "front_door.json").write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        print(f"{key:<22} {value}")
    print(f"written to {RESULTS / 'front_door.json'}")


if __name__ == "__main__":
    main()
