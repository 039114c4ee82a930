"""The node catalogue: each node type's /object_info entry as ComfyUI reports it.

Specs use ComfyUI's own shape (``{"required": {name: [TYPE, opts]}}``) so validation, /object_info
and execution all read the same table. Tooltips, descriptions and output tooltips are those of ComfyUI 0.3.64
(shared/comfyui/transcripts/13_misc_endpoints.json, and its nodes.py / comfy_extras for the classes that
transcript leaves out: the loaders, ``ModelSamplingAuraFlow`` and ``EmptySD3LatentImage`` that the web editor's
default workflow uses come from nodes.py, comfy_extras/nodes_model_advanced.py and nodes_sd3.py). A loader's file
list is its model folder's, read on each request (``model_choices``). ``newest`` adds what the newest server.py
``node_info`` (Comfy-Org/ComfyUI@002c3fb9) adds to every entry: ``is_input_list``, ``has_intermediate_output`` and
``search_aliases``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INT_MAX = 0xFFFFFFFFFFFFFFFF
# ComfyUI 0.3.64's (transcript 13)
SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
            "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
            "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
            "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
            "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
            "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
            "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
              "kl_optimal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
MAX_RESOLUTION = 16384
# the model folder a loader's combo lists, as its INPUT_TYPES asks folder_paths
MODEL_LISTS = {("CheckpointLoaderSimple", "ckpt_name"): "checkpoints", ("CLIPLoader", "clip_name"): "text_encoders",
               ("VAELoader", "vae_name"): "vae", ("UNETLoader", "unet_name"): "diffusion_models"}
# VAELoader.vae_list: a tiny autoencoder is offered where vae_approx holds both halves (taef1's two are swapped there,
# which changes nothing: both must be present)
_TINY_VAES = ("taesd", "taesdxl", "taesd3", "taef1")


@dataclass
class NodeSpec:
    name: str
    display_name: str | None  # None: a V3 node whose schema names none (the page shows its name)
    category: str
    required: dict[str, list]
    outputs: Sequence[str] = ()
    output_names: Sequence[str] | None = None
    output_node: bool = False
    description: str = ""
    python_module: str = "nodes"
    hidden: dict[str, str] = field(default_factory=dict)
    optional: dict[str, list] = field(default_factory=dict)
    output_tooltips: Sequence[str | None] | None = None
    v3: bool = False  # a comfy_api "V3" node: its entry also tells deprecated, experimental and api_node

    def object_info(self, input_files: list[str], models: Mapping[str, list[str]], *,
                    newest: bool = False) -> dict[str, Any]:
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
        info: dict[str, Any] = {"input": inputs, "input_order": order}
        if newest:
            info["is_input_list"] = False
        info.update({
            "output": list(self.outputs), "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
        })
        if self.v3:
            info["output_tooltips"] = list(self.output_tooltips or [None] * len(self.outputs))
        info.update({"name": self.name, "display_name": self.display_name, "description": self.description,
                     "python_module": self.python_module, "category": self.category,
                     "output_node": self.output_node})
        if newest:
            info["has_intermediate_output"] = False
        if self.output_tooltips is not None and not self.v3:
            info["output_tooltips"] = list(self.output_tooltips)
        if self.v3:
            info.update({"deprecated": False, "experimental": False, "api_node": False})
        if newest:
            info["search_aliases"] = []
        return info


def model_choices(node: str, name: str, models: Mapping[str, list[str]]) -> list[str] | None:
    """The choices of a loader's file input, from the server's model folders; None for any other input."""
    folder = MODEL_LISTS.get((node, name))
    if folder is None:
        return None
    choices = list(models.get(folder, []))
    if node == "VAELoader":
        approx = models.get("vae_approx", [])
        choices += [tiny for tiny in _TINY_VAES
                    if all(any(f.startswith(f"{tiny}_{half}.") for f in approx) for half in ("encoder", "decoder"))]
        choices.append("pixel_space")
    return choices


def _dynamic_spec(node: str, name: str, spec: list, input_files: list[str], models: Mapping[str, list[str]]) -> list:
    if node == "LoadImage" and name == "image":
        return [sorted(input_files), {"image_upload": True}]
    choices = model_choices(node, name, models)
    return spec if choices is None else [choices, *spec[1:]]


def _int(default: int, lo: int, hi: int, step: int | None = None, **extra: Any) -> list:
    opts: dict[str, Any] = {"default": default, "min": lo, "max": hi}
    if step is not None:
        opts["step"] = step
    opts.update(extra)
    return ["INT", opts]


_SAVE_DESCRIPTION = "Saves the input images to your ComfyUI output directory."
_PROMPT_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
_SEED_TIP = "The random seed used for creating the noise."
SYS_MAXSIZE = 0x7FFFFFFFFFFFFFFF  # PrimitiveInt's bounds: Python's sys.maxsize on a 64-bit server


def _tip(kind: Any, tooltip: str, **opts: Any) -> list:
    return [kind, {**opts, "tooltip": tooltip}]


_CLIP_RECIPES = ("[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
                 "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n "
                 "hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B")
# what the web editor's default workflow (Z-Image Turbo) uses beyond the classic text-to-image nodes
_EDITOR_DEFAULT_NODES = [
    NodeSpec("CLIPLoader", "Load CLIP", "advanced/loaders", {"clip_name": [[]], "type": [CLIP_TYPES]}, ("CLIP",),
             description=_CLIP_RECIPES, optional={"device": [["default", "cpu"], {"advanced": True}]}),
    NodeSpec("VAELoader", "Load VAE", "loaders", {"vae_name": [[]]}, ("VAE",)),
    NodeSpec("UNETLoader", "Load Diffusion Model", "advanced/loaders",
             {"unet_name": [[]], "weight_dtype": [WEIGHT_DTYPES]}, ("MODEL",)),
    NodeSpec("ModelSamplingAuraFlow", "ModelSamplingAuraFlow", "advanced/model",
             {"model": ["MODEL"], "shift": ["FLOAT", {"default": 1.73, "min": 0.0, "max": 100.0, "step": 0.01}]},
             ("MODEL",), python_module="comfy_extras.nodes_model_advanced"),
    NodeSpec("EmptySD3LatentImage", None, "latent/sd3",
             {"width": _int(1024, 16, MAX_RESOLUTION, 16), "height": _int(1024, 16, MAX_RESOLUTION, 16),
              "batch_size": _int(1, 1, 4096)}, ("LATENT",), python_module="comfy_extras.nodes_sd3", v3=True),
]

SPECS: dict[str, NodeSpec] = {s.name: s for s in [
    NodeSpec("CheckpointLoaderSimple", "Load Checkpoint", "loaders",
             {"ckpt_name": [[], {"tooltip": "The name of the checkpoint (model) to load."}]},
             ("MODEL", "CLIP", "VAE"),
             description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
             output_tooltips=("The model used for denoising latents.",
                              "The CLIP model used for encoding text prompts.",
                              "The VAE model used for encoding and decoding images to and from latent space.")),
    NodeSpec("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
             {"text": _tip("STRING", "The text to be encoded.", multiline=True, dynamicPrompts=True),
              "clip": _tip("CLIP", "The CLIP model used for encoding the text.")},
             ("CONDITIONING",),
             description="Encodes a text prompt using a CLIP model into an embedding that can be used to guide the "
                         "diffusion model towards generating specific images.",
             output_tooltips=("A conditioning containing the embedded text used to guide the diffusion model.",)),
    NodeSpec("EmptyLatentImage", "Empty Latent Image", "latent",
             {"width": _int(512, 16, 16384, 8, tooltip="The width of the latent images in pixels."),
              "height": _int(512, 16, 16384, 8, tooltip="The height of the latent images in pixels."),
              "batch_size": _int(1, 1, 4096, tooltip="The number of latent images in the batch.")}, ("LATENT",),
             description="Create a new batch of empty latent images to be denoised via sampling.",
             output_tooltips=("The empty latent image batch.",)),
    NodeSpec("KSampler", "KSampler", "sampling",
             {"model": _tip("MODEL", "The model used for denoising the input latent."),
              "seed": _int(0, 0, INT_MAX, control_after_generate=True, tooltip=_SEED_TIP),
              "steps": _int(20, 1, 10000, tooltip="The number of steps used in the denoising process."),
              "cfg": _tip("FLOAT", "The Classifier-Free Guidance scale balances creativity and adherence to the "
                                   "prompt. Higher values result in images more closely matching the prompt however "
                                   "too high values will negatively impact quality.",
                          default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              "sampler_name": _tip(SAMPLERS, "The algorithm used when sampling, this can affect the quality, speed, "
                                             "and style of the generated output."),
              "scheduler": _tip(SCHEDULERS, "The scheduler controls how noise is gradually removed to form the "
                                            "image."),
              "positive": _tip("CONDITIONING", "The conditioning describing the attributes you want to include in "
                                               "the image."),
              "negative": _tip("CONDITIONING", "The conditioning describing the attributes you want to exclude from "
                                               "the image."),
              "latent_image": _tip("LATENT", "The latent image to denoise."),
              "denoise": _tip("FLOAT", "The amount of denoising applied, lower values will maintain the structure "
                                       "of the initial image allowing for image to image sampling.",
                              default=1.0, min=0.0, max=1.0, step=0.01)},
             ("LATENT",),
             description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
             output_tooltips=("The denoised latent.",)),
    NodeSpec("VAEDecode", "VAE Decode", "latent",
             {"samples": _tip("LATENT", "The latent to be decoded."),
              "vae": _tip("VAE", "The VAE model used for decoding the latent.")}, ("IMAGE",),
             description="Decodes latent images back into pixel space images.",
             output_tooltips=("The decoded image.",)),
    NodeSpec("VAEEncode", "VAE Encode", "latent", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ("LATENT",)),
    NodeSpec("SaveImage", "Save Image", "image",
             {"images": ["IMAGE", {"tooltip": "The images to save."}],
              "filename_prefix": _tip("STRING", "The prefix for the file to save. This may include formatting "
                                                "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                                "to include values from nodes.", default="ComfyUI")},
             output_node=True, description=_SAVE_DESCRIPTION, hidden=_PROMPT_HIDDEN),
    NodeSpec("PreviewImage", "Preview Image", "image", {"images": ["IMAGE"]}, output_node=True,
             description=_SAVE_DESCRIPTION, hidden=_PROMPT_HIDDEN),
    NodeSpec("MaskPreview", "MaskPreview", "mask", {"mask": ["MASK"]}, output_node=True,
             description=_SAVE_DESCRIPTION,  # a subclass of SaveImage: its DESCRIPTION too
             hidden=_PROMPT_HIDDEN, python_module="comfy_extras.nodes_mask"),
    NodeSpec("LoadImage", "Load Image", "image", {"image": [[], {"image_upload": True}]}, ("IMAGE", "MASK")),
    NodeSpec("EmptyImage", "EmptyImage", "image",
             {"width": _int(512, 1, 16384, 1), "height": _int(512, 1, 16384, 1), "batch_size": _int(1, 1, 4096),
              "color": _int(0, 0, 0xFFFFFF, 1, display="color")}, ("IMAGE",)),
    NodeSpec("ImageInvert", "Invert Image", "image", {"image": ["IMAGE"]}, ("IMAGE",)),
    NodeSpec("ImageScale", "Upscale Image", "image/upscaling",
             {"image": ["IMAGE"], "upscale_method": [UPSCALE_METHODS], "width": _int(512, 0, 16384, 1),
              "height": _int(512, 0, 16384, 1), "crop": [["disabled", "center"]]}, ("IMAGE",)),
    NodeSpec("ImageAddNoise", "ImageAddNoise", "image",
             {"image": ["IMAGE"], "seed": _int(0, 0, INT_MAX, control_after_generate=True, tooltip=_SEED_TIP),
              "strength": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}]}, ("IMAGE",),
             python_module="comfy_extras.nodes_images"),
    NodeSpec("GetImageSize", "Get Image Size", "image", {"image": ["IMAGE"]}, ("INT", "INT", "INT"),
             ("width", "height", "batch_size"), python_module="comfy_extras.nodes_images",
             description="Returns width and height of the image, and passes it through unchanged.",
             hidden={"unique_id": "UNIQUE_ID"}),
    NodeSpec("PrimitiveInt", "Int", "utils/primitive",
             {"value": ["INT", {"min": -SYS_MAXSIZE, "max": SYS_MAXSIZE, "control_after_generate": True}]},
             ("INT",), python_module="comfy_extras.nodes_primitive", v3=True),
    NodeSpec("PreviewAny", "Preview Any", "utils", {"source": ["*", {}]}, output_node=True,
             python_module="comfy_extras.nodes_preview_any"),
    *_EDITOR_DEFAULT_NODES,
    NodeSpec("SaveImageWebsocket", "SaveImageWebsocket", "api/image", {"images": ["IMAGE"]}, output_node=True,
             python_module="custom_nodes.websocket_image_save"),
]}
