"""The node catalogue's /object_info entries (emulator.catalogue): every one complete, and those ComfyUI 0.3.64's
transcript shows answered exactly as it answered them."""
from __future__ import annotations

import json

from comfyart.emulator.catalogue import SPECS
from tests.support.paths import SHARED

TRANSCRIPT = SHARED / "comfyui" / "transcripts" / "13_misc_endpoints.json"
KEYS = {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name", "description",
        "python_module", "category", "output_node"}
NEWEST_KEYS = {"is_input_list", "has_intermediate_output", "search_aliases"}


def _real_object_info() -> dict:
    events = json.loads(TRANSCRIPT.read_text())["events"]
    return next(e["response_json"] for e in events if e.get("path") == "/object_info" and "response_json" in e)


def test_entries_match_the_real_servers_where_the_transcript_has_them():
    real = _real_object_info()
    compared = 0
    for name, spec in SPECS.items():
        if name in real:
            ours = spec.object_info(real["LoadImage"]["input"]["required"]["image"][0], {"checkpoints": []})
            assert ours == real[name], name
            compared += 1
    assert compared >= 8


def test_every_entry_is_complete_and_tells_its_library_place():
    for name, spec in SPECS.items():
        info = spec.object_info([], {"checkpoints": ["a.safetensors"]})
        assert set(info) >= KEYS and not NEWEST_KEYS & set(info), name
        assert info["category"] and info["display_name"] and info["name"] == name
        assert len(info["output"]) == len(info["output_is_list"]) == len(info["output_name"])
        assert info["input_order"] == {section: list(specs) for section, specs in info["input"].items()}
        if "output_tooltips" in info:
            assert len(info["output_tooltips"]) == len(info["output"]), name
        newest = spec.object_info([], {"checkpoints": []}, newest=True)
        assert newest["is_input_list"] is False and newest["has_intermediate_output"] is False
        assert newest["search_aliases"] == []
