"""What the emulator's nodes make (emulator.nodes): real PNGs, with ComfyUI's pixels and the prompt embedded."""
from __future__ import annotations

import io

import httpx
from PIL import Image

from tests.support.emulator import post_prompt, wait_history
from tests.support.graphs import basic_graph


def test_saved_images_are_real_pngs_with_the_prompt_embedded(emulator):
    emu = emulator()
    entry = wait_history(emu.url, post_prompt(emu.url, basic_graph(width=40, height=30, prefix="a/b")))
    [image] = entry["outputs"]["3"]["images"]
    assert image == {"filename": "b_00001_.png", "subfolder": "a", "type": "output"}
    data = httpx.get(emu.url + "/view", params=image).content
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.size == (40, 30)
        # inverted as ComfyUI does it, in float32 and truncated: 0x99 (153) becomes 101, not 102; a real ComfyUI
        # 0.3.64 saved exactly these bytes for this graph
        assert png.getpixel((0, 0)) == (204, 153, 101)
        assert '"SaveImage"' in png.info["prompt"]
