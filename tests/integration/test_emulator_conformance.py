"""The emulator against transcripts recorded from a real ComfyUI 0.3.64: the shared capture client runs the same
scenarios against the emulator, and the normalised transcripts must match message for message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance import diff
from tests.conftest import SHARED

CAPTURE = SHARED / "comfyui" / "tools" / "capture.py"
REAL = SHARED / "comfyui" / "transcripts"

# scenario name in capture.py -> transcript file; run in this order on one fresh emulator, as they were recorded
EXACT = {
    "connect": "00_ws_connect_handshake",
    "success": "01_success_basic",
    "cached": "02_cached_rerun",
    "twice": None,  # runs (the cache state of later scenarios depends on it) but races: not compared
    "validation": "04_validation_errors",
    "runtime_error": "05_runtime_error",
    "progress_legacy": "06_progress_preview_legacy",
    "progress_meta": "07_progress_preview_metadata",
    "progress_text": "08_progress_text",
}


@pytest.fixture(scope="module")
def emulated_transcripts(tmp_path_factory: pytest.TempPathFactory, emulator_module) -> Path:
    out = tmp_path_factory.mktemp("transcripts")
    env = {**os.environ, "COMFY_BASE": emulator_module.url, "TRANSCRIPT_DIR": str(out)}
    result = subprocess.run([sys.executable, str(CAPTURE), *EXACT], env=env, capture_output=True, text=True,
                            timeout=240)
    assert "FAILED" not in result.stdout, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def emulator_module(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import EmulatorProcess, free_port, wait_for_port, ROOT
    port = free_port()
    base = tmp_path_factory.mktemp("emulator")
    process = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--port", str(port), "--base-dir",
                                str(base)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    emu = EmulatorProcess(port, base, process)
    yield emu
    emu.stop()


@pytest.mark.parametrize("scenario", [name for name in EXACT.values() if name])
def test_emulator_matches_real_comfyui(emulated_transcripts: Path, scenario: str):
    real = json.loads((REAL / f"{scenario}.json").read_text())
    emulated = json.loads((emulated_transcripts / f"{scenario}.json").read_text())
    differences = diff(real, emulated)
    assert not differences, "\n".join(differences[:60])


def test_the_comparison_would_notice_a_difference(emulated_transcripts: Path):
    real = json.loads((REAL / "01_success_basic.json").read_text())
    emulated = json.loads((emulated_transcripts / "01_success_basic.json").read_text())
    frames = [e for e in emulated["events"] if e["kind"] == "ws_recv" and e.get("json", {}).get("type") == "executed"]
    frames[0]["json"]["data"]["output"]["images"][0]["subfolder"] = "elsewhere"
    assert diff(real, emulated)
