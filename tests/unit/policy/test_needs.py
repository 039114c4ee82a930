"""What a graph needs (policy.needs): the models its loaders name, and its cost."""
import pytest

from comfyart.policy.needs import graph_cost, graph_models, names_model


# ---------------------------------------------------------------------------------------------------- models
def test_graph_models_finds_every_loader_input():
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "style.safetensors", "model": ["1", 0]}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "vae.pt"}},
        "4": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5.safetensors", "clip_name2": "l.sft"}},
        "5": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.gguf", "weight_dtype": "default"}},
        "6": {"class_type": "SomeCustomLoader", "inputs": {"motion_name": "animate.ckpt", "mode_name": "fast"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "a model.safetensors", "clip": ["1", 1]}},
        "8": {"class_type": "Broken"},
    }
    assert graph_models(graph) == {"sdxl.safetensors", "style.safetensors", "vae.pt", "t5.safetensors", "l.sft",
                                   "flux.gguf", "animate.ckpt"}


def test_graph_models_ignores_links_and_empty_values():
    assert graph_models({"1": {"class_type": "X", "inputs": {"ckpt_name": ["2", 0]}},
                         "2": {"class_type": "Y", "inputs": {"ckpt_name": ""}}}) == frozenset()


@pytest.mark.parametrize("choice", ["pixel_space", "taesd", "taesdxl", "taesd3", "taef1"])
def test_a_vae_loaders_built_in_choices_are_no_model_files(choice):
    graph = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": choice}},
             "2": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}}
    assert graph_models(graph) == {"ae.safetensors"}
    assert not names_model("vae_name", choice) and names_model("vae_name", f"{choice}.safetensors")


# ---------------------------------------------------------------------------------------------------- cost
def sampler(steps, source="5"):
    return {"class_type": "KSampler", "inputs": {"steps": steps, "latent_image": [source, 0], "seed": 1}}


def latent(width, height, batch=1, **extra):
    return {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                          **extra}}


@pytest.mark.parametrize("graph, expected", [
    ({"3": sampler(20), "5": latent(512, 512)}, 20),
    ({"3": sampler(20), "5": latent(1024, 1024)}, 80),  # four times the pixels
    ({"3": sampler(20), "5": latent(512, 512, batch=4)}, 80),
    ({"3": sampler(30), "5": latent(848, 480, length=33)}, 30 * 848 * 480 * 33 / (512 * 512)),  # video frames
    ({"3": sampler(20), "4": sampler(10), "5": latent(512, 512)}, 30),  # hires fix: both passes
    ({"3": sampler(20), "5": latent(256, 256)}, 20),  # smaller latents count as one image: steps dominate
    ({"3": sampler(20)}, 20),  # no literal latent size
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}}}, 0),  # no sampler
    ({"3": {"class_type": "KSampler", "inputs": {"steps": ["9", 0]}}}, 0),  # steps from a link: unknown
    ({"3": {"class_type": "KSampler", "inputs": {"steps": True}}}, 0),
    ({"3": "garbage", "4": {"inputs": None}}, 0),
    ({}, 0),
])
def test_graph_cost(graph, expected):
    assert graph_cost(graph) == pytest.approx(expected)
