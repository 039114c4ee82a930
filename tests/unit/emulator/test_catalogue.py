"""The node catalogue's /object_info entries (emulator.catalogue): every one complete, and those ComfyUI 0.3.64's
transcript shows answered exactly as it answered them."""
from __future__ import annotations

import json

import pytest

from comfyart.emulator.catalogue import SPECS, model_choices
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
        assert info["category"] and info["name"] == name
        assert info["display_name"] or spec.v3, name  # a V3 schema may name none: ComfyUI sends null
        assert len(info["output"]) == len(info["output_is_list"]) == len(info["output_name"])
        assert info["input_order"] == {section: list(specs) for section, specs in info["input"].items()}
        if "output_tooltips" in info:
            assert len(info["output_tooltips"]) == len(info["output"]), name
        newest = spec.object_info([], {"checkpoints": []}, newest=True)
        assert newest["is_input_list"] is False and newest["has_intermediate_output"] is False
        assert newest["search_aliases"] == []


MODELS = {"checkpoints": ["a.safetensors"], "text_encoders": ["qwen_3_4b.safetensors", "t5/t5xxl.safetensors"],
          "vae": ["ae.safetensors"], "diffusion_models": ["z_image_turbo_bf16.safetensors"]}
# ComfyUI 0.3.64's entries for the classes the web editor's default workflow adds, written out from its source:
# nodes.py (CLIPLoader, VAELoader, UNETLoader and NODE_DISPLAY_NAME_MAPPINGS), comfy_extras/nodes_model_advanced.py
# and the V3 schema of comfy_extras/nodes_sd3.py as comfy_api's get_v1_info lists it (no display_name: null)
EDITOR_DEFAULT_ENTRIES = {
    "CLIPLoader": {
        "input": {"required": {"clip_name": [["qwen_3_4b.safetensors", "t5/t5xxl.safetensors"]],
                               "type": [["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv",
                                         "pixart", "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2",
                                         "qwen_image", "hunyuan_image"]]},
                  "optional": {"device": [["default", "cpu"], {"advanced": True}]}},
        "input_order": {"required": ["clip_name", "type"], "optional": ["device"]},
        "output": ["CLIP"], "output_is_list": [False], "output_name": ["CLIP"], "name": "CLIPLoader",
        "display_name": "Load CLIP",
        "description": "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
                       "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\n"
                       "wan: umt5 xxl\n hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B",
        "python_module": "nodes", "category": "advanced/loaders", "output_node": False},
    "VAELoader": {
        "input": {"required": {"vae_name": [["ae.safetensors", "pixel_space"]]}},
        "input_order": {"required": ["vae_name"]}, "output": ["VAE"], "output_is_list": [False],
        "output_name": ["VAE"], "name": "VAELoader", "display_name": "Load VAE", "description": "",
        "python_module": "nodes", "category": "loaders", "output_node": False},
    "UNETLoader": {
        "input": {"required": {"unet_name": [["z_image_turbo_bf16.safetensors"]],
                               "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]]}},
        "input_order": {"required": ["unet_name", "weight_dtype"]}, "output": ["MODEL"], "output_is_list": [False],
        "output_name": ["MODEL"], "name": "UNETLoader", "display_name": "Load Diffusion Model", "description": "",
        "python_module": "nodes", "category": "advanced/loaders", "output_node": False},
    "ModelSamplingAuraFlow": {
        "input": {"required": {"model": ["MODEL"],
                               "shift": ["FLOAT", {"default": 1.73, "min": 0.0, "max": 100.0, "step": 0.01}]}},
        "input_order": {"required": ["model", "shift"]}, "output": ["MODEL"], "output_is_list": [False],
        "output_name": ["MODEL"], "name": "ModelSamplingAuraFlow", "display_name": "ModelSamplingAuraFlow",
        "description": "", "python_module": "comfy_extras.nodes_model_advanced", "category": "advanced/model",
        "output_node": False},
    "EmptySD3LatentImage": {
        "input": {"required": {"width": ["INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}],
                               "height": ["INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}],
                               "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}},
        "input_order": {"required": ["width", "height", "batch_size"]}, "output": ["LATENT"],
        "output_is_list": [False], "output_name": ["LATENT"], "output_tooltips": [None],
        "name": "EmptySD3LatentImage", "display_name": None, "description": "",
        "python_module": "comfy_extras.nodes_sd3", "category": "latent/sd3", "output_node": False,
        "deprecated": False, "experimental": False, "api_node": False},
}


def test_the_editor_default_workflows_classes_are_listed_as_comfyui_0_3_64_lists_them():
    for name, entry in EDITOR_DEFAULT_ENTRIES.items():
        assert SPECS[name].object_info([], MODELS) == entry, name


def test_a_sampler_and_scheduler_of_the_default_workflow_are_choices():
    required = SPECS["KSampler"].object_info([], MODELS)["input"]["required"]
    assert "res_multistep" in required["sampler_name"][0] and "simple" in required["scheduler"][0]


@pytest.mark.parametrize("approx, offered", [
    ([], []), (["taesd_decoder.pth"], []), (["taesd_decoder.pth", "taesd_encoder.pth"], ["taesd"]),
    (["taesdxl_encoder.safetensors", "taesdxl_decoder.safetensors", "taef1_encoder.pth", "taef1_decoder.pth"],
     ["taesdxl", "taef1"]),
    (["taesd3_decoder.pth", "taesd3_encoder.pth", "taesd_decoderx.pth"], ["taesd3"])])
def test_vae_loader_offers_the_tiny_autoencoders_whose_two_halves_are_there(approx, offered):
    assert model_choices("VAELoader", "vae_name", {"vae": ["a.pt"], "vae_approx": approx}) == [
        "a.pt", *offered, "pixel_space"]


def test_each_loader_lists_its_own_model_folder_and_keeps_its_options():
    assert model_choices("UNETLoader", "unet_name", MODELS) == ["z_image_turbo_bf16.safetensors"]
    assert model_choices("CLIPLoader", "clip_name", {}) == []
    assert model_choices("CLIPLoader", "type", MODELS) is None
    ckpt = SPECS["CheckpointLoaderSimple"].object_info([], MODELS)["input"]["required"]["ckpt_name"]
    assert ckpt == [["a.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}]
