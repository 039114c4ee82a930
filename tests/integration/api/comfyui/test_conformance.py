"""The ComfyUI-compatible front door against transcripts recorded from a real ComfyUI 0.3.64: the shared capture
client runs its scenarios against ``comfyart serve`` (one emulator behind it), and the normalised transcripts must
match message for message, after the differences comfyart makes on purpose are taken out:

- outputs live under ``subfolder = <task id>/<backend's subfolder>`` (two backends' files never collide);
- ``extra_data`` gains ``create_time``, as newer ComfyUI adds it;
- ``max_upload_size`` is comfyart's own upload limit;
- a body that is not JSON, or a ``prompt`` that is not an object, gets a 400 with ComfyUI's error shape rather than
  ComfyUI's 500 page;
- ``status`` is sent once per change of the cluster's queue length, where ComfyUI repeats an unchanged one at
  every queue event: runs of equal ``status`` frames count once.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.conformance import diff
from tests.support.daemon import serve_subprocess
from tests.support.paths import ROOT, SHARED
from tests.support.ports import free_port, wait_for_port

CAPTURE = SHARED / "comfyui" / "tools" / "capture.py"
REAL = SHARED / "comfyui" / "transcripts"
SCENARIOS = {"connect": "00_ws_connect_handshake", "success": "01_success_basic", "cached": "02_cached_rerun",
             "api_ws": "19_api_prefixed_ws", "progress_legacy": "06_progress_preview_legacy",
             "progress_meta": "07_progress_preview_metadata", "prompt_options": "18_prompt_body_options",
             "interrupt": "09_interrupt", "no_client_id": "14_no_client_id_and_two_clients"}
# the interrupt lands at the backend's next progress report or node boundary: compared as in the emulator's test
RELAXED = {"09_interrupt"}
# two sockets, and frames racing the HTTP polls: each socket and the HTTP exchanges compared in their own order
PER_CHANNEL = {"14_no_client_id_and_two_clients"}
TASK_SUBFOLDER = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}(/|%2F|(?=\"|&|$))")


def comfyart_differences_removed(transcript: dict[str, Any]) -> dict[str, Any]:
    text = TASK_SUBFOLDER.sub("", json.dumps(transcript))
    text = re.sub(r'"max_upload_size": \d+', '"max_upload_size": "<limit>"', text)
    text = re.sub(r', "create_time": \d+', "", text)
    events = json.loads(text)["events"]
    kept = []
    for event in events:
        frame = event.get("json") if event.get("kind") == "ws_recv" else None
        if isinstance(frame, dict) and frame.get("type") == "status":
            earlier = next((e for e in reversed(kept) if e.get("kind") == "ws_recv" and e.get("conn") == event["conn"]),
                           None)
            if earlier is not None and earlier.get("json") == frame:
                continue
        body = event.get("response_json")
        if event.get("kind") == "http" and event.get("status") == 400 and isinstance(body, dict) and (
                body.get("error", {}).get("type") == "invalid_json"
                or body.get("error", {}).get("message") == "Prompt must be an object of nodes"):
            # ComfyUI answers these with its 500 page
            event = {**event, "status": 500, "response_json": None,
                     "response_headers": {**event.get("response_headers", {}), "Content-Type": "text/plain"}}
        kept.append(event)
    return {**transcript, "events": kept}


@pytest.fixture(scope="module")
def front_door_transcripts(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("front-door")
    emulator_port, port = free_port(), free_port()
    # --megapixel-seconds: the big-image interrupt scenario needs a CPU ComfyUI's pace
    emulator = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--port", str(emulator_port),
                                 "--base-dir", str(work / "emulator"), "--megapixel-seconds", "0.03"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        wait_for_port(emulator_port)
        daemon = serve_subprocess({"server": {"host": "127.0.0.1", "port": port},
                                   "redis": {"url": redis_server.rsplit("/", 1)[0] + "/5", "prefix": "conformance"},
                                   "data_dir": str(work / "data"), "pool": {"min_containers": 0},
                                   "static_backends": [{"name": "emu", "url": f"http://127.0.0.1:{emulator_port}"}]},
                                  work / "comfyart.yaml")
        wait_for_port(port)
        deadline = time.monotonic() + 30
        while not any(b["status"] == "healthy" for b in httpx.get(f"http://127.0.0.1:{port}/api/pool").json()["backends"]):
            assert time.monotonic() < deadline, "the emulator never became healthy"
            time.sleep(0.1)
        out = work / "transcripts"
        out.mkdir()
        env = {**os.environ, "COMFY_BASE": f"http://127.0.0.1:{port}", "TRANSCRIPT_DIR": str(out)}
        result = subprocess.run([sys.executable, str(CAPTURE), *SCENARIOS], env=env, capture_output=True, text=True,
                                timeout=300)
        assert "FAILED" not in result.stdout, result.stdout + result.stderr
        yield out
    finally:
        for process in (daemon, emulator):
            if process is not None:
                process.terminate()
                process.wait(20)


@pytest.mark.parametrize("scenario", SCENARIOS.values())
def test_the_front_door_matches_real_comfyui(front_door_transcripts: Path, scenario: str):
    real = comfyart_differences_removed(json.loads((REAL / f"{scenario}.json").read_text()))
    served = comfyart_differences_removed(json.loads((front_door_transcripts / f"{scenario}.json").read_text()))
    relaxed = scenario in RELAXED
    differences = diff(real, served, unordered_nodes=relaxed, progress_values=not relaxed,
                       per_channel=scenario in PER_CHANNEL)
    assert not differences, "\n".join(differences[:60])


def test_the_normalisation_keeps_what_matters(front_door_transcripts: Path):
    served = json.loads((front_door_transcripts / "01_success_basic.json").read_text())
    for event in served["events"]:
        if event.get("kind") == "ws_recv" and event.get("json", {}).get("type") == "execution_success":
            event["json"]["type"] = "execution_error"
    real = json.loads((REAL / "01_success_basic.json").read_text())
    assert diff(comfyart_differences_removed(real), comfyart_differences_removed(served))
