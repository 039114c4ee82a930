"""What the emulator serves to ComfyUI's web editor besides the API, all written for the emulator: the built-in
demo node pack's web extension and example workflow, and a tiny set of workflow templates (the real server serves
the comfyui-workflow-templates package at /templates; the editor reads ``index.json`` and ``<name>.json``).
"""
from __future__ import annotations

from typing import Any

DEMO_PACK = "emulator-demo"
DEMO_PACK_FILES = {
    "demo.js": """// The comfyart emulator's demo node pack: proves that a node pack's web extension loads.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "emulator.demo",
  async setup() {
    window.__emulatorDemoPackLoaded = true;
  },
});
""",
}


def _node(node_id: int, kind: str, order: int, widgets: list[Any], inputs: list[dict[str, Any]],
          outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": node_id, "type": kind, "pos": [100 + 300 * order, 100], "size": [270, 120], "flags": {},
            "order": order, "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {},
            "widgets_values": widgets}


def _invert_workflow(color: int) -> dict[str, Any]:
    """A UI-format workflow: an empty image, inverted, saved."""
    return {
        "last_node_id": 3, "last_link_id": 2,
        "nodes": [
            _node(1, "EmptyImage", 0, [512, 512, 1, color], [],
                  [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
            _node(2, "ImageInvert", 1, [], [{"name": "image", "type": "IMAGE", "link": 1}],
                  [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]),
            _node(3, "SaveImage", 2, ["ComfyUI"], [{"name": "images", "type": "IMAGE", "link": 2}], []),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


TEMPLATES: dict[str, dict[str, Any]] = {
    "emulator_invert": _invert_workflow(0xFF8000),
    "emulator_invert_blue": _invert_workflow(0x2050C0),
}
TEMPLATE_INDEX = [{
    "moduleName": "default", "title": "Emulator", "type": "image", "category": "GENERATION TYPE",
    "templates": [
        {"name": "emulator_invert", "title": "Invert an orange image", "mediaType": "image", "mediaSubtype": "webp",
         "description": "An empty orange image, inverted and saved: runs on the comfyart emulator."},
        {"name": "emulator_invert_blue", "title": "Invert a blue image", "mediaType": "image",
         "mediaSubtype": "webp", "description": "The same with a blue image."},
    ],
}]
DEMO_PACK_WORKFLOWS = {"demo-invert": _invert_workflow(0x40A040)}
