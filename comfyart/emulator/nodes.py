"""The nodes' implementations: small Pillow versions of ComfyUI's nodes that produce real images.

Implementations are deliberately cheap: the emulator stands in for a GPU, it does not try to draw anything
meaningful.
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, PngImagePlugin

NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]  # a node's outputs and its ui output


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
    report_progress: Callable[..., Any]  # async (value, max, preview image or None[, jpeg])
    send_text: Callable[[str], Any]  # async: binary TEXT frame for this node
    step_s: float = 0.0
    latent_previews: bool = False  # the prompt's preview method sends a sampler's previews


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



async def _checkpoint_loader(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    name = inputs["ckpt_name"]
    return (("model", name), ("clip", name), ("vae", name)), None


async def _clip_loader(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (("clip", inputs["clip_name"]),), None


async def _vae_loader(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (("vae", inputs["vae_name"]),), None


async def _unet_loader(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (("model", inputs["unet_name"]),), None


async def _model_sampling(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (inputs["model"],), None  # the patched sampling changes nothing the emulator draws


async def _clip_text_encode(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (("conditioning", inputs["text"]),), None


async def _empty_latent_image(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (Latent(inputs["width"], inputs["height"], inputs["batch_size"]),), None


async def _vae_encode(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    images = inputs["pixels"]
    return (Latent(images[0].size[0], images[0].size[1], len(images), source=list(images)),), None


def _latent_preview(latent: Latent, seed: int, step: int) -> Image.Image:
    """What latent2rgb shows: a picture at the latent's size (an eighth of the image's)."""
    return _seeded_image(max(1, latent.width // 8), max(1, latent.height // 8), seed + step, "preview")


async def _ksampler(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    latent: Latent = inputs["latent_image"]
    steps = inputs["steps"]
    for step in range(1, steps + 1):
        preview = _latent_preview(latent, inputs["seed"], step) if ctx.latent_previews else None
        await ctx.report_progress(step, steps, preview, True)
    return (Latent(latent.width, latent.height, latent.batch, inputs["seed"], str(inputs["positive"][1]),
                   latent.source, inputs["denoise"]),), None


async def _vae_decode(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    lat: Latent = inputs["samples"]
    images = [_seeded_image(lat.width, lat.height, lat.seed + i, lat.text) for i in range(lat.batch)]
    if lat.source:
        # image to image: keep (1 - denoise) of the encoded picture, as a sampler starting from it would
        images = [Image.blend(lat.source[i % len(lat.source)].convert("RGB"), image, lat.denoise)
                  for i, image in enumerate(images)]
    return (images,), None


async def _empty_image(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    color = inputs["color"]
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    image = Image.new("RGB", (inputs["width"], inputs["height"]), rgb)
    # one picture shared by the batch: no node changes its input in place, and 150 copies of a 2048² image
    # would hold the event loop (and every socket) for seconds
    return ([image] * inputs["batch_size"],), None


async def _image_invert(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return ([im.convert("RGB").point(_INVERT * 3) for im in inputs["image"]],), None


async def _image_scale(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    width, height = inputs["width"], inputs["height"]
    out = []
    for im in inputs["image"]:
        w = width or max(1, round(im.size[0] * height / im.size[1]))
        h = height or max(1, round(im.size[1] * width / im.size[0]))
        out.append(im.resize((w, h)))
    return (out,), None


async def _image_add_noise(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    rng = random.Random(inputs["seed"])
    out = []
    for im in inputs["image"]:
        noise = Image.frombytes("RGB", im.size, rng.randbytes(im.size[0] * im.size[1] * 3))
        out.append(Image.blend(im, noise, inputs["strength"]))
    return (out,), None


async def _get_image_size(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    images = inputs["image"]
    w, h = images[0].size
    await ctx.send_text(f"width: {w}, height: {h}\n batch size: {len(images)}")
    return (w, h, len(images)), None


async def _primitive_int(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (inputs["value"],), None


async def _load_image(inputs: dict[str, Any], ctx: Context) -> NodeResult:
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


async def _save_image(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (), _save_images(inputs["images"], inputs["filename_prefix"], ctx.output_dir, "output", ctx)


async def _preview_image(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (), _save_images(inputs["images"], ctx.temp_prefix, ctx.temp_dir, "temp", ctx)


async def _mask_preview(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    masks = [m.convert("RGB") for m in inputs["mask"]]
    return (), _save_images(masks, ctx.temp_prefix, ctx.temp_dir, "temp", ctx)


async def _preview_any(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    return (), {"text": [_as_text(inputs["source"])]}


async def _save_image_websocket(inputs: dict[str, Any], ctx: Context) -> NodeResult:
    images = inputs["images"]
    for index, image in enumerate(images):
        await ctx.report_progress(index, len(images), image)
    return (), None


IMPLEMENTATIONS: dict[str, Callable[[dict[str, Any], Context], Awaitable[NodeResult]]] = {
    "CheckpointLoaderSimple": _checkpoint_loader,
    "CLIPLoader": _clip_loader,
    "VAELoader": _vae_loader,
    "UNETLoader": _unet_loader,
    "ModelSamplingAuraFlow": _model_sampling,
    "CLIPTextEncode": _clip_text_encode,
    "EmptyLatentImage": _empty_latent_image,
    "EmptySD3LatentImage": _empty_latent_image,  # the same Latent: the emulator draws no channels
    "VAEEncode": _vae_encode,
    "KSampler": _ksampler,
    "VAEDecode": _vae_decode,
    "EmptyImage": _empty_image,
    "ImageInvert": _image_invert,
    "ImageScale": _image_scale,
    "ImageAddNoise": _image_add_noise,
    "GetImageSize": _get_image_size,
    "PrimitiveInt": _primitive_int,
    "LoadImage": _load_image,
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "MaskPreview": _mask_preview,
    "PreviewAny": _preview_any,
    "SaveImageWebsocket": _save_image_websocket,
}


async def run_node(class_type: str, inputs: dict[str, Any], ctx: Context) -> NodeResult:
    """Execute one node; returns (outputs, ui_output)."""
    implementation = IMPLEMENTATIONS.get(class_type)
    if implementation is None:
        raise NodeError(f"emulator has no implementation for {class_type}")
    return await implementation(inputs, ctx)
