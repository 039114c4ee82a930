"""The node catalogue: each node type's input specs as ComfyUI's /object_info reports them.

Specs use ComfyUI's own shape (``{"required": {name: [TYPE, opts]}}``) so validation, /object_info
and execution all read the same table.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INT_MAX = 0xFFFFFFFFFFFFFFFF
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_sde",
            "dpmpp_2m_sde", "ddim", "uni_pc", "lcm"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


@dataclass
class NodeSpec:
    name: str
    display_name: str
    category: str
    required: dict[str, list]
    outputs: Sequence[str] = ()
    output_names: Sequence[str] | None = None
    output_node: bool = False
    description: str = ""
    python_module: str = "nodes"
    hidden: dict[str, str] = field(default_factory=dict)
    optional: dict[str, list] = field(default_factory=dict)

    def object_info(self, input_files: list[str], models: Mapping[str, list[str]]) -> dict[str, Any]:
        required = {}
        for name, spec in self.required.items():
            required[name] = _dynamic_spec(self.name, name, spec, input_files, models)
        inputs: dict[str, Any] = {"required": required}
        order: dict[str, list[str]] = {"required": list(required)}
        if self.optional:
            inputs["optional"] = dict(self.optional)
            order["optional"] = list(self.optional)
        if self.hidden:
            inputs["hidden"] = dict(self.hidden)
            order["hidden"] = list(self.hidden)
        return {
            "input": inputs, "input_order": order,
            "output": list(self.outputs), "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
            "name": self.name, "display_name": self.display_name, "description": self.description,
            "python_module": self.python_module, "category": self.category, "output_node": self.output_node,
        }


def _dynamic_spec(node: str, name: str, spec: list, input_files: list[str], models: Mapping[str, list[str]]) -> list:
    if node == "LoadImage" and name == "image":
        return [sorted(input_files), {"image_upload": True}]
    if node == "CheckpointLoaderSimple" and name == "ckpt_name":
        return [list(models.get("checkpoints", [])), {}]
    return spec


def _int(default: int, lo: int, hi: int, step: int | None = None, **extra: Any) -> list:
    opts: dict[str, Any] = {"default": default, "min": lo, "max": hi}
    if step is not None:
        opts["step"] = step
    opts.update(extra)
    return ["INT", opts]


SPECS: dict[str, NodeSpec] = {s.name: s for s in [
    NodeSpec("CheckpointLoaderSimple", "Load Checkpoint", "loaders",
             {"ckpt_name": [[], {"tooltip": "The name of the checkpoint (model) to load."}]},
             ("MODEL", "CLIP", "VAE")),
    NodeSpec("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
             {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP", {}]},
             ("CONDITIONING",)),
    NodeSpec("EmptyLatentImage", "Empty Latent Image", "latent",
             {"width": _int(512, 16, 16384, 8), "height": _int(512, 16, 16384, 8),
              "batch_size": _int(1, 1, 4096)}, ("LATENT",)),
    NodeSpec("KSampler", "KSampler", "sampling",
             {"model": ["MODEL", {}], "seed": _int(0, 0, INT_MAX, control_after_generate=True),
              "steps": _int(20, 1, 10000), "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                                             "round": 0.01}],
              "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
              "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
              "latent_image": ["LATENT", {}],
              "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
             ("LATENT",)),
    NodeSpec("VAEDecode", "VAE Decode", "latent", {"samples": ["LATENT", {}], "vae": ["VAE", {}]}, ("IMAGE",)),
    NodeSpec("VAEEncode", "VAE Encode", "latent", {"pixels": ["IMAGE", {}], "vae": ["VAE", {}]}, ("LATENT",)),
    NodeSpec("SaveImage", "Save Image", "image",
             {"images": ["IMAGE", {"tooltip": "The images to save."}],
              "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
             output_node=True, description="Saves the input images to your ComfyUI output directory.",
             hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}),
    NodeSpec("PreviewImage", "Preview Image", "image", {"images": ["IMAGE"]}, output_node=True,
             description="Saves the input images to your ComfyUI output directory.",
             hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}),
    NodeSpec("MaskPreview", "MaskPreview", "mask", {"mask": ["MASK", {}]}, output_node=True,
             hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}, python_module="comfy_extras.nodes_mask"),
    NodeSpec("LoadImage", "Load Image", "image", {"image": [[], {"image_upload": True}]}, ("IMAGE", "MASK")),
    NodeSpec("EmptyImage", "EmptyImage", "image",
             {"width": _int(512, 1, 16384, 1), "height": _int(512, 1, 16384, 1), "batch_size": _int(1, 1, 4096),
              "color": _int(0, 0, 0xFFFFFF, 1, display="color")}, ("IMAGE",)),
    NodeSpec("ImageInvert", "Invert Image", "image", {"image": ["IMAGE"]}, ("IMAGE",)),
    NodeSpec("ImageScale", "Upscale Image", "image/upscaling",
             {"image": ["IMAGE"], "upscale_method": [UPSCALE_METHODS], "width": _int(512, 0, 16384, 1),
              "height": _int(512, 0, 16384, 1), "crop": [["disabled", "center"]]}, ("IMAGE",)),
    NodeSpec("ImageAddNoise", "ImageAddNoise", "image",
             {"image": ["IMAGE", {}], "seed": _int(0, 0, INT_MAX, control_after_generate=True),
              "strength": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}]}, ("IMAGE",),
             python_module="comfy_extras.nodes_images"),
    NodeSpec("GetImageSize", "Get Image Size", "image", {"image": ["IMAGE", {}]}, ("INT", "INT", "INT"),
             ("width", "height", "batch_size"), python_module="comfy_extras.nodes_images"),
    NodeSpec("PrimitiveInt", "Int", "utils/primitive", {"value": _int(0, -INT_MAX, INT_MAX)}, ("INT",),
             python_module="comfy_extras.nodes_primitive"),
    NodeSpec("PreviewAny", "Preview Any", "utils", {"source": ["*", {}]}, output_node=True,
             python_module="comfy_extras.nodes_preview_any"),
    NodeSpec("SaveImageWebsocket", "SaveImageWebsocket", "api/image", {"images": ["IMAGE"]}, output_node=True,
             python_module="custom_nodes.websocket_image_save"),
]}
