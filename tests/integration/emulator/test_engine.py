"""The emulator's device figures (emulator.engine): VRAM that follows the GPU pinning, or the CPU."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support.emulator import post_prompt, wait_history
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port


def test_vram_figures_follow_the_gpu_pinning(tmp_path):
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "2"}
    process = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--port", str(port), "--base-dir",
                                str(tmp_path), "--vram-mb", "8192"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        [device] = httpx.get(url + "/system_stats").json()["devices"]
        assert device["type"] == "cuda" and "GPU 2" in device["name"]
        assert device["vram_total"] == 8192 << 20 and device["vram_free"] == device["vram_total"]
        graph = {"4": {"class_type": "CheckpointLoaderSimple",
                       "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
                 "9": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
        wait_history(url, post_prompt(url, graph))
        [device] = httpx.get(url + "/system_stats").json()["devices"]
        assert device["vram_free"] < device["vram_total"]  # a loaded checkpoint holds VRAM
    finally:
        process.terminate()
        process.wait(10)


def test_unpinned_emulator_reports_the_cpu(emulator):
    [device] = httpx.get(emulator().url + "/system_stats").json()["devices"]
    assert device["type"] == "cpu" and device["index"] is None
