"""Runs comfyart against a real ComfyUI and checks the outcomes; CI cannot have ComfyUI, a developer can.

    python3 bench/real_comfyui.py http://127.0.0.1:8188 [--tasks 20] [--results PATH]

Starts a redis-server and `comfyart serve` with the given URL as its one static backend, submits model-free
graphs (success, a fully cached re-run, a LoadImage of a PNG it makes and uploads through comfyart's /upload/image, a
node that fails at run time, a graph that fails validation, a prompt whose socket another client takes over, a stored
workflow run with an uploaded image and then with that run's output), and checks each task's final record; for
completed tasks it downloads the file again straight from ComfyUI's /view and compares sha256. Prints a table and
writes bench/results/real_comfyui.json (or --results).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, Rig  # noqa: E402


def basic(color: int, prefix: str = "comfyart/real") -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}}


def load_image(name: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "comfyart/load"}}}


def cases(uploaded: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Each case's graph and the status its task must end in; ``uploaded``: the name /upload/image answered."""
    return {
        "success": (basic(0x123456), "completed"),
        "cached rerun": (basic(0x123456), "completed"),
        "load uploaded": (load_image(uploaded), "completed"),
        "runtime error": (basic(0x654321, prefix="../escape"), "failed"),
        "validation error": ({"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1,
                                                                           "color": 0}},
                              "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                          "filename_prefix": "x"}}},
                             "refused"),  # checked at submission against the backend's /object_info: a 400
    }


# the input image every case that loads one uses: made here, so ComfyUI's input folder needs nothing (a fresh
# ComfyUI has no example.png); each inversion must show in the outputs' pixels
SAMPLE_COLOR, INVERTED, INVERTED_TWICE = (200, 30, 60), (54, 225, 195), (201, 29, 59)  # ComfyUI truncates float32


def sample_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), SAMPLE_COLOR).save(buffer, "PNG")
    return buffer.getvalue()


def pixel(data: bytes) -> tuple:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((3, 3))


def check_pixel(client: httpx.Client, result: dict[str, Any], expected: tuple) -> None:
    """A completed case is ok only when its first output's pixel is ``expected``."""
    record = client.get(f"/api/tasks/{result['task']}").json()
    if record["status"] == "completed":
        data = client.get(f"/api/tasks/{result['task']}/outputs/{record['outputs'][0]['filename']}").content
        result["ok"] = result["ok"] and pixel(data) == expected


def upload_sample(client: httpx.Client) -> str:
    """The sample PNG through comfyart's ComfyUI-compatible upload: comfyart keeps it and delivers it to whichever
    backend runs a graph that names it."""
    answer = client.post("/upload/image", files={"image": ("comfyart-real.png", sample_png(), "image/png")})
    answer.raise_for_status()
    return str(answer.json()["name"])


def wait_record(client: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        record = client.get(f"/api/tasks/{task_id}").json()
        if record["status"] in ("completed", "failed", "canceled") or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def run_case(client: httpx.Client, comfy: str, name: str, graph: dict, expected: str) -> dict[str, Any]:
    answer = client.post("/api/tasks", json={"prompt": graph})
    if answer.status_code == 400:  # refused at submission, with ComfyUI's own node_errors
        errors = [e["type"] for node in answer.json().get("node_errors", {}).values() for e in node["errors"]]
        return {"case": name, "task": None, "expected": expected, "status": "refused", "ok": expected == "refused"
                and bool(errors), "detail": ", ".join(errors)[:100], "seconds": 0.0}
    answer.raise_for_status()
    return check_record(client, comfy, name, answer.json()["id"], expected)


def check_record(client: httpx.Client, comfy: str, name: str, task_id: str, expected: str) -> dict[str, Any]:
    record = wait_record(client, task_id)
    ok = record["status"] == expected
    detail = record.get("error") or ""
    for output in record["outputs"]:
        direct = httpx.get(f"{comfy}/view", params={k: output[k] for k in ("filename", "subfolder", "type")})
        same = hashlib.sha256(direct.content).hexdigest() == output["sha256"]
        ok = ok and same
        detail = f"{output['filename']} sha256 {'matches' if same else 'DIFFERS'}"
    if expected == "completed":
        ok = ok and bool(record["outputs"])
    seconds = round(((record.get("finished_ms") or 0) - record["created_ms"]) / 1000, 3)
    return {"case": name, "task": task_id, "expected": expected, "status": record["status"], "ok": ok,
            "detail": detail[:100], "seconds": seconds}


INVERT = {"graph": {"1": {"class_type": "LoadImage", "inputs": {"image": "set-by-the-image-parameter.png"}},
                    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "comfyart/wf"}}},
          "params": {"image": {"type": "image", "target": "1.image", "required": True}}}


def workflow_cases(client: httpx.Client, comfy: str) -> list[dict[str, Any]]:
    """A stored workflow whose image parameter is uploaded with the run, then fed with that run's output: comfyart
    must deliver each file through ComfyUI's /upload/image, and each inversion must show in the picture."""
    client.put("/api/workflows/real-invert", json=INVERT).raise_for_status()
    uploaded = client.post("/api/workflows/real-invert/run",
                           files={"image": ("in.png", sample_png(), "image/png")}).json()["id"]
    first = check_record(client, comfy, "workflow upload", uploaded, "completed")
    check_pixel(client, first, INVERTED)
    record = client.get(f"/api/tasks/{uploaded}").json()
    results = [first]
    if record["status"] == "completed":
        chained_id = client.post("/api/tasks", json={"workflow": "real-invert", "params": {
            "image": {"task": uploaded, "filename": record["outputs"][0]["filename"]}}}).json()["id"]
        chained = check_record(client, comfy, "workflow chained", chained_id, "completed")
        check_pixel(client, chained, INVERTED_TWICE)
        results.append(chained)
    return results


def socket_takeover(client: httpx.Client, comfy: str, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """Another socket opened with comfyart's client id silently takes over; the watchdog must still finish."""
    import asyncio

    import aiohttp

    first = client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["tasks"][0]
    history = httpx.get(f"{comfy}/history/{first['prompt_id']}").json()
    client_id = history[first["prompt_id"]]["prompt"][3]["client_id"]

    async def hold_socket() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(comfy.replace("http", "ws", 1) + f"/ws?clientId={client_id}"):
            return await asyncio.to_thread(run_case, client, comfy, "socket takeover", basic(0xABCDEF), "completed")

    return asyncio.run(hold_socket())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a running ComfyUI, e.g. http://127.0.0.1:8188")
    parser.add_argument("--tasks", type=int, default=20, help="extra concurrent tasks submitted at once")
    parser.add_argument("--results", type=Path, default=RESULTS / "real_comfyui.json", help="where the JSON goes")
    args = parser.parse_args()
    comfy = args.url.rstrip("/")
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-real-")))
    results: list[dict[str, Any]] = []
    try:
        _, api = rig.daemon(rig.redis(), [comfy], "real")
        with httpx.Client(base_url=api, timeout=30) as client:
            uploaded = upload_sample(client)
            for name, (graph, expected) in cases(uploaded).items():
                results.append(run_case(client, comfy, name, graph, expected))
            check_pixel(client, next(r for r in results if r["case"] == "load uploaded"), INVERTED)
            results.append(socket_takeover(client, comfy, results))
            results.extend(workflow_cases(client, comfy))
            start = time.monotonic()
            ids = [client.post("/api/tasks", json={"prompt": basic(i * 977)}).json()["id"] for i in range(args.tasks)]
            while client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"] < \
                    sum(r["status"] == "completed" for r in results) + len(ids):
                if time.monotonic() - start > 300:
                    break
                time.sleep(0.1)
            records = [client.get(f"/api/tasks/{i}").json() for i in ids]
            done = sum(r["status"] == "completed" for r in records)
            results.append({"case": f"{args.tasks} at once", "expected": "completed", "status": f"{done} completed",
                            "ok": done == len(ids), "detail": "",
                            "seconds": round(time.monotonic() - start, 3)})
    finally:
        rig.close()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    for row in results:
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['case']:<18} {row['status']:<14} {row['seconds']:>7}s  "
              f"{row['detail']}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
