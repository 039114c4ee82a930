"""Emulators that differ from one another (emulator.inventory): a node class left out with ``--without-nodes``, and
checkpoints read from ``<base-dir>/models/checkpoints`` on every request, so a file copied in or deleted is seen at
once, as a real ComfyUI rescans its model folders."""
from __future__ import annotations

import httpx

from tests.support.emulator import wait_history
from tests.support.graphs import basic_graph, text_to_image_graph


def submit(url: str, graph: dict) -> httpx.Response:
    return httpx.post(url + "/prompt", json={"prompt": graph, "client_id": "test"}, timeout=10)


def checkpoint_choices(url: str) -> list[str]:
    info = httpx.get(url + "/object_info/CheckpointLoaderSimple", timeout=10).json()
    return info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]


def with_checkpoint(name: str) -> dict:
    graph = text_to_image_graph(steps=1)
    graph["4"]["inputs"]["ckpt_name"] = name
    return graph


def test_a_node_class_left_out_is_absent_and_refused_as_an_unknown_class(emulator):
    emu = emulator("--without-nodes", "ImageInvert,GetImageSize")
    everything = httpx.get(emu.url + "/object_info", timeout=10).json()
    assert "ImageInvert" not in everything and "GetImageSize" not in everything and "SaveImage" in everything
    assert httpx.get(emu.url + "/object_info/ImageInvert", timeout=10).json() == {}
    response = submit(emu.url, basic_graph())
    assert response.status_code == 400
    assert response.json() == {"error": {"type": "invalid_prompt",
                                         "message": "Cannot execute because node ImageInvert does not exist.",
                                         "details": "Node ID '#2'", "extra_info": {}}, "node_errors": {}}
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "kept"}}}
    assert submit(emu.url, graph).status_code == 200  # the others still run


def test_a_model_file_copied_in_is_listed_and_runs_at_once(emulator):
    emu = emulator("--checkpoints", "a.safetensors")
    assert checkpoint_choices(emu.url) == ["a.safetensors"]
    refused = submit(emu.url, with_checkpoint("sdxl/new.safetensors"))
    assert refused.status_code == 400 and refused.json()["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    folder = emu.base_dir / "models" / "checkpoints"
    (folder / "sdxl").mkdir()
    (folder / "sdxl" / "new.safetensors").write_bytes(b"")
    (folder / "notes.txt").write_text("not a model")  # ComfyUI lists only files with a model extension
    assert checkpoint_choices(emu.url) == ["a.safetensors", "sdxl/new.safetensors"]
    assert httpx.get(emu.url + "/models/checkpoints", timeout=10).json() == ["a.safetensors", "sdxl/new.safetensors"]
    accepted = submit(emu.url, with_checkpoint("sdxl/new.safetensors"))
    assert accepted.status_code == 200, accepted.text
    assert wait_history(emu.url, accepted.json()["prompt_id"])["status"]["status_str"] == "success"


def test_a_model_file_deleted_is_refused_with_comfyuis_value_not_in_list(emulator):
    emu = emulator("--checkpoints", "a.safetensors,b.safetensors")
    assert submit(emu.url, with_checkpoint("b.safetensors")).status_code == 200
    (emu.base_dir / "models" / "checkpoints" / "b.safetensors").unlink()
    assert httpx.get(emu.url + "/models/checkpoints", timeout=10).json() == ["a.safetensors"]
    response = submit(emu.url, with_checkpoint("b.safetensors"))
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["4"]["errors"] == [{
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "ckpt_name: 'b.safetensors' not in ['a.safetensors']",
        "extra_info": {"input_name": "ckpt_name",
                       "input_config": [["a.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}],
                       "received_value": "b.safetensors"}}]


def test_other_model_folders_list_their_files(emulator):
    emu = emulator()
    assert httpx.get(emu.url + "/models/loras", timeout=10).json() == []
    loras = emu.base_dir / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "detail.safetensors").write_bytes(b"")
    assert httpx.get(emu.url + "/models/loras", timeout=10).json() == ["detail.safetensors"]
    assert httpx.get(emu.url + "/models/nonsense", timeout=10).status_code == 404
