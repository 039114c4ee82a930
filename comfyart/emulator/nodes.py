"""Node catalogue of the ComfyUI emulator: input specs as ComfyUI's /object_info reports them, and
small Pillow implementations that produce real images.

Specs use ComfyUI's own shape (``{"required": {name: [TYPE, opts]}}``) so validation, /object_info
and execution all read the same table. Implementations are deliberately cheap: the emulator stands in
for a GPU, it does not try to draw anything meaningful.
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, PngImagePlugin

INT_MAX = 0xFFFFFFFFFFFFFFFF
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_sde",
            "dpmpp_2m_sde", "ddim", "uni_pc", "lcm"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


class NodeError(Exception):
    """Raised by a node implementation; becomes an ``execution_error``."""

    def __init__(self, message: str, exception_type: str = "Exception") -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class Latent:
    width: int
    height: int
    batch: int
    seed: int = 0
    text: str = ""
    source: list[Image.Image] | None = None  # the encoded pictures of an image-to-image latent
    denoise: float = 1.0


@dataclass
class Context:
    """What a node implementation may touch while it runs."""

    output_dir: str
    input_dir: str
    temp_dir: str
    temp_prefix: str
    prompt: dict[str, Any]
    extra_pnginfo: Any
    report_progress: Callable[[int, int, Image.Image | None], Any]  # async (value, max, preview)
    send_text: Callable[[str], Any]  # async: binary TEXT frame for this node
    step_s: float = 0.0


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

    def object_info(self, input_files: list[str], models: dict[str, list[str]]) -> dict[str, Any]:
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


def _dynamic_spec(node: str, name: str, spec: list, input_files: list[str], models: dict[str, list[str]]) -> list:
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


# --------------------------------------------------------------------------- implementations

def _seeded_image(width: int, height: int, seed: int, text: str) -> Image.Image:
    """A deterministic, non-trivial picture: a two-colour gradient picked by seed and prompt text."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    a, b = digest[:3], digest[3:6]
    grad = Image.linear_gradient("L").resize((width, height))
    return Image.composite(Image.new("RGB", (width, height), tuple(a)),
                           Image.new("RGB", (width, height), tuple(b)), grad)


def _next_counter(folder: str, stem: str) -> int:
    highest = 0
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(stem + "_") and name.endswith("_.png"):
                middle = name[len(stem) + 1:-5]
                if middle.isdigit():
                    highest = max(highest, int(middle))
    return highest + 1


def _save_images(images: list[Image.Image], prefix: str, base_dir: str, kind: str, ctx: Context,
                 ) -> dict[str, Any]:
    subfolder, stem = os.path.split(prefix)
    target = os.path.abspath(os.path.join(base_dir, subfolder))
    if os.path.commonpath([target, os.path.abspath(base_dir)]) != os.path.abspath(base_dir):
        raise NodeError("**** ERROR: Saving image outside the output folder is not allowed.\n"
                        f" full_output_folder: {target}\n         output_dir: {base_dir}\n")
    os.makedirs(target, exist_ok=True)
    counter = _next_counter(target, stem)
    results = []
    for image in images:
        filename = f"{stem}_{counter:05}_.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", _json(ctx.prompt))
        if isinstance(ctx.extra_pnginfo, dict):
            for key, value in ctx.extra_pnginfo.items():
                info.add_text(str(key), _json(value))
        image.save(os.path.join(target, filename), pnginfo=info, compress_level=4)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": results}


def _json(value: Any) -> str:
    import json
    return json.dumps(value)


def _as_text(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        return f"{len(value)} image(s) {value[0].size[0]}x{value[0].size[1]}"
    return str(value)


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


# ComfyUI inverts float32 pixels (v / 255, then 1 - x) and saves them truncated (uint8 of 255 * x): 200 becomes 54,
# not 55. This table gives the same bytes for every value.
_INVERT = [int(min(255.0, max(0.0, _float32(255.0 * _float32(1.0 - _float32(v / 255.0)))))) for v in range(256)]


async def run_node(class_type: str, inputs: dict[str, Any], ctx: Context) -> tuple[tuple, dict | None]:
    """Execute one node; returns (outputs, ui_output)."""
    if class_type == "CheckpointLoaderSimple":
        name = inputs["ckpt_name"]
        return (("model", name), ("clip", name), ("vae", name)), None
    if class_type == "CLIPTextEncode":
        return (("conditioning", inputs["text"]),), None
    if class_type == "EmptyLatentImage":
        return (Latent(inputs["width"], inputs["height"], inputs["batch_size"]),), None
    if class_type == "VAEEncode":
        images = inputs["pixels"]
        return (Latent(images[0].size[0], images[0].size[1], len(images), source=list(images)),), None
    if class_type == "KSampler":
        latent: Latent = inputs["latent_image"]
        steps = inputs["steps"]
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, None)
        return (Latent(latent.width, latent.height, latent.batch, inputs["seed"], str(inputs["positive"][1]),
                       latent.source, inputs["denoise"]),), None
    if class_type == "VAEDecode":
        lat: Latent = inputs["samples"]
        images = [_seeded_image(lat.width, lat.height, lat.seed + i, lat.text) for i in range(lat.batch)]
        if lat.source:
            # image to image: keep (1 - denoise) of the encoded picture, as a sampler starting from it would
            images = [Image.blend(lat.source[i % len(lat.source)].convert("RGB"), image, lat.denoise)
                      for i, image in enumerate(images)]
        return (images,), None
    if class_type == "EmptyImage":
        color = inputs["color"]
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        image = Image.new("RGB", (inputs["width"], inputs["height"]), rgb)
        # one picture shared by the batch: no node changes its input in place, and 150 copies of a 2048² image
        # would hold the event loop (and every socket) for seconds
        return ([image] * inputs["batch_size"],), None
    if class_type == "ImageInvert":
        return ([im.convert("RGB").point(_INVERT * 3) for im in inputs["image"]],), None
    if class_type == "ImageScale":
        width, height = inputs["width"], inputs["height"]
        out = []
        for im in inputs["image"]:
            w = width or max(1, round(im.size[0] * height / im.size[1]))
            h = height or max(1, round(im.size[1] * width / im.size[0]))
            out.append(im.resize((w, h)))
        return (out,), None
    if class_type == "ImageAddNoise":
        rng = random.Random(inputs["seed"])
        out = []
        for im in inputs["image"]:
            noise = Image.frombytes("RGB", im.size, rng.randbytes(im.size[0] * im.size[1] * 3))
            out.append(Image.blend(im, noise, inputs["strength"]))
        return (out,), None
    if class_type == "GetImageSize":
        images = inputs["image"]
        w, h = images[0].size
        await ctx.send_text(f"width: {w}, height: {h}\n batch size: {len(images)}")
        return (w, h, len(images)), None
    if class_type == "PrimitiveInt":
        return (inputs["value"],), None
    if class_type == "LoadImage":
        path = os.path.join(ctx.input_dir, inputs["image"])
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
                alpha = opened.getchannel("A") if "A" in opened.getbands() else None
        except OSError as exc:
            raise NodeError(f"cannot identify image file '{path}'\n", "PIL.UnidentifiedImageError") from exc
        # ComfyUI's mask is 1 - alpha (zero where there is no alpha channel)
        mask = ImageOps.invert(alpha) if alpha is not None else Image.new("L", image.size, 0)
        return ([image], [mask]), None
    if class_type == "SaveImage":
        return (), _save_images(inputs["images"], inputs["filename_prefix"], ctx.output_dir, "output", ctx)
    if class_type == "PreviewImage":
        return (), _save_images(inputs["images"], ctx.temp_prefix, ctx.temp_dir, "temp", ctx)
    if class_type == "MaskPreview":
        masks = [m.convert("RGB") for m in inputs["mask"]]
        return (), _save_images(masks, ctx.temp_prefix, ctx.temp_dir, "temp", ctx)
    if class_type == "PreviewAny":
        return (), {"text": [_as_text(inputs["source"])]}
    if class_type == "SaveImageWebsocket":
        images = inputs["images"]
        for index, image in enumerate(images):
            await ctx.report_progress(index, len(images), image)
        return (), None
    raise NodeError(f"emulator has no implementation for {class_type}")
