"""``bench/real_comfyui.py``, the check a developer runs against a real ComfyUI, run here against the emulator."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def test_the_real_comfyui_check_brings_its_own_input_image(tmp_path: Path, emulator):
    """A fresh ComfyUI has nothing in its input folder: the check uploads the image it loads."""
    emu = emulator()
    (emu.base_dir / "input" / "example.png").unlink()  # the emulator makes one, as ComfyUI's repository ships one
    results = tmp_path / "real_comfyui.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "real_comfyui.py"), emu.url, "--tasks", "2",
                          "--results", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert results.exists(), run.stdout + run.stderr
    rows = {row["case"]: row for row in json.loads(results.read_text())}
    assert rows["load uploaded"]["ok"] and rows["load uploaded"]["status"] == "completed", run.stdout
    assert run.returncode == 0 and all(row["ok"] for row in rows.values()), run.stdout + run.stderr
