"""ComfyUI API-format graphs the tests submit, and a small ``/object_info`` to validate graphs against."""
from __future__ import annotations

from typing import Any

from comfyart.emulator.catalogue import SPECS


def basic_graph(color: int = 0x336699, width: int = 64, height: int = 48, prefix: str = "test/basic") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                     "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def text_to_image_graph(seed: int = 1, steps: int = 4) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t2i", "images": ["8", 0]}},
    }


def image_to_image_graph(image: Any, seed: int = 1, steps: int = 4, denoise: float = 0.6) -> dict[str, Any]:
    """``text_to_image_graph`` starting from an input image instead of an empty latent: LoadImage of ``image`` (a
    file name, a ``core/ASSET`` reference, or an SDK asset handle) encoded by the checkpoint's VAE (node 10, 11)."""
    graph = text_to_image_graph(seed=seed, steps=steps)
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["11", 0], denoise=denoise)
    graph["9"]["inputs"]["filename_prefix"] = "i2i"
    return graph


EDITOR_PROMPT_TEXT = (
    "anime RPG game style, cute anime girl with gigantic fennec ears and a big fluffy fox tail with long wavy blonde "
    "hair and large blue eyes blonde colored eyelashes wearing a pink sweater a large oversized gold trimmed black "
    "winter coat and a long blue maxi skirt and a red scarf, she is sitting beside a campfire in the wilderness at "
    "night playing guitar with a milky way galaxy sky")
EDITOR_NEGATIVE_TEXT = "low quality, bad anatomy, extra digits, missing digits, extra limbs, missing limbs"


def _node(class_type: str, title: str, ver: str = "0.3.64", **inputs: Any) -> dict[str, Any]:
    return {"inputs": inputs, "class_type": class_type,
            "_meta": {"title": title, "cnr_id": "comfy-core", "ver": ver}}


def default_editor_graph() -> dict[str, Any]:
    """What ComfyUI web editor 1.58.1 sends for its default workflow (workflowStore ``defaultGraph``, Z-Image
    Turbo): its widgets' values and links as graphToPrompt writes them, keys in the page's (numeric) order, each
    node titled by its ``display_name`` (its class where the server gives none), with the ``cnr_id`` and ``ver``
    the workflow's node properties carry."""
    return {
        "9": _node("SaveImage", "Save Image", filename_prefix="ComfyUI", images=["65", 0]),
        "62": _node("CLIPLoader", "Load CLIP", "0.3.73", clip_name="qwen_3_4b.safetensors", type="lumina2",
                    device="default"),
        "63": _node("VAELoader", "Load VAE", "0.3.73", vae_name="ae.safetensors"),
        "65": _node("VAEDecode", "VAE Decode", samples=["70", 0], vae=["63", 0]),
        "66": _node("UNETLoader", "Load Diffusion Model", "0.3.73", unet_name="z_image_turbo_bf16.safetensors",
                    weight_dtype="default"),
        "67": _node("CLIPTextEncode", "CLIP Text Encode (Prompt)", "0.3.73", text=EDITOR_PROMPT_TEXT, clip=["62", 0]),
        "68": _node("EmptySD3LatentImage", "EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "69": _node("ModelSamplingAuraFlow", "ModelSamplingAuraFlow", shift=3, model=["66", 0]),
        "70": _node("KSampler", "KSampler", seed=42, steps=8, cfg=1, sampler_name="res_multistep", scheduler="simple",
                    denoise=1, model=["69", 0], positive=["67", 0], negative=["71", 0], latent_image=["68", 0]),
        "71": _node("CLIPTextEncode", "CLIP Text Encode (Prompt)", "0.3.73", text=EDITOR_NEGATIVE_TEXT,
                    clip=["62", 0]),
    }


# a graph the store keeps and never runs
STORED_GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {}}}

# a graph only the request models read: its node's class is never looked up
ONE_NODE_GRAPH = {"1": {"class_type": "A"}}

# a small ``/object_info``: what the validator checks graphs against
OBJECT_INFO = {
    "EmptyImage": {"input": {"required": {"width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                                          "height": ["INT", {"min": 1, "max": 16384}],
                                          "color": ["INT", {"min": 0, "max": 0xFFFFFF}]}},
                   "output": ["IMAGE"], "output_node": False},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"], "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}},
                  "output": [], "output_node": True},
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"], "output_node": False},
    "Sampler": {"input": {"required": {"sampler": ["COMBO", {"options": ["euler", "ddim"]}]},
                          "optional": {"denoise": ["FLOAT", {"min": 0.0, "max": 1.0}]}},
                "output": ["LATENT"], "output_node": False},
    "PreviewAny": {"input": {"required": {"source": ["*", {}]}}, "output": [], "output_node": True},
}


def invert_graph(**changes) -> dict:
    """EmptyImage, ImageInvert, SaveImage (valid against ``OBJECT_INFO``); ``changes`` update a node's inputs."""
    g = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "color": 0}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    for node, inputs in changes.items():
        g[node]["inputs"].update(inputs)
    return g


def emulator_object_info(checkpoints: tuple[str, ...] = ("v1-5-pruned-emaonly-fp16.safetensors",),
                         input_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """The emulator's ``/object_info`` (ComfyUI's own specs: KSampler's seed 0..2^64-1, steps 1..10000, ...)."""
    return {name: spec.object_info(list(input_files), {"checkpoints": list(checkpoints)})
            for name, spec in SPECS.items()}


T2I_OBJECT_INFO = emulator_object_info()
