"""What the fleet holds (policy.holdings): the folder of a model, what one inventory has that no other has, and the
fleet's models with the backends that hold each."""
from __future__ import annotations

import itertools

import pytest

from comfyart.policy.holdings import (
    EMBEDDINGS,
    Capped,
    Holdings,
    Only,
    exclusive,
    fleet_models,
    folder_of,
    model_kinds,
)
from comfyart.policy.inventory import UNLISTED, Inventory

SD15, SDXL, FLUX = "v1-5.safetensors", "sdxl.safetensors", "flux.safetensors"
LORA = "detail.safetensors"
BASE_NODES = ("CheckpointLoaderSimple", "KSampler", "SaveImage")


def inventory(digest: str, checkpoints=(SD15,), loras=(), nodes=BASE_NODES, embeddings=(),
              samplers=("euler",)) -> Inventory:
    choices = {("CheckpointLoaderSimple", "ckpt_name"): frozenset(checkpoints),
               ("KSampler", "sampler_name"): frozenset(samplers)}
    if loras:
        choices[("LoraLoader", "lora_name")] = frozenset(loras)
    return Inventory(digest, frozenset(nodes), choices, frozenset(embeddings))


def kinds_of(*inventories: Inventory) -> dict[str, dict[str, frozenset[str]]]:
    return {inv.digest: model_kinds(inv) for inv in inventories}


@pytest.mark.parametrize(("node", "name", "folder"), [
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
    ("unCLIPCheckpointLoader", "ckpt_name", "checkpoints"),
    ("LoraLoader", "lora_name", "loras"),
    ("LoraLoaderModelOnly", "lora_name", "loras"),
    ("VAELoader", "vae_name", "vae"),
    ("UNETLoader", "unet_name", "diffusion_models"),
    ("CLIPLoader", "clip_name", "text_encoders"),
    ("DualCLIPLoader", "clip_name2", "text_encoders"),
    ("CLIPVisionLoader", "clip_name", "clip_vision"),
    ("ControlNetLoader", "control_net_name", "controlnet"),
    ("UpscaleModelLoader", "model_name", "upscale_models"),
    ("StyleModelLoader", "style_model_name", "style_models"),
    ("GLIGENLoader", "gligen_name", "gligen"),
    ("HypernetworkLoader", "hypernetwork_name", "hypernetworks"),
    # a custom loader whose folder cannot be told: the input it is a choice of
    ("SomePackLoader", "model_name", "SomePackLoader.model_name"),
    ("SomePackLoader", "weights_name", "SomePackLoader.weights_name"),
])
def test_the_folder_of_a_loader_input(node, name, folder):
    assert folder_of(node, name) == folder


def test_model_kinds_names_every_model_choice_and_embedding_with_its_folders():
    inv = Inventory("a", frozenset(), {("CheckpointLoaderSimple", "ckpt_name"): frozenset({SD15, SDXL}),
                                       ("LoraLoader", "lora_name"): frozenset({LORA}),
                                       ("SomePack", "model_name"): frozenset({SD15}),  # the same file, twice
                                       ("KSampler", "sampler_name"): frozenset({"euler"}),  # no model
                                       ("LoadImage", "image"): frozenset({"cat.png"})},
                    frozenset({"easynegative"}))
    assert model_kinds(inv) == {SD15: {"checkpoints", "SomePack.model_name"}, SDXL: {"checkpoints"},
                                LORA: {"loras"}, "easynegative": {EMBEDDINGS}}
    assert model_kinds(UNLISTED) == {}


@pytest.mark.parametrize(("count", "shown", "expected"), [
    (0, 3, Capped((), 0)), (2, 3, Capped(("m0", "m1"), 0)), (3, 3, Capped(("m0", "m1", "m2"), 0)),
    (5, 3, Capped(("m0", "m1", "m2"), 2)), (5, 0, Capped((), 5)),
])
def test_capped_shows_the_first_names_sorted_and_counts_the_rest(count, shown, expected):
    assert Capped.of(reversed([f"m{i}" for i in range(count)]), shown) == expected


def test_what_each_inventory_has_that_no_other_has():
    a = inventory("a", checkpoints=(SD15, SDXL), nodes=(*BASE_NODES, "SaveVideo"), embeddings=("neg",))
    b = inventory("b", checkpoints=(SD15, FLUX), loras=(LORA,), nodes=(*BASE_NODES, "LoraLoader"))
    c = inventory("c", checkpoints=(SD15,))
    only = exclusive([a, b, c], kinds_of(a, b, c))
    assert only == {"a": Only(Capped(("neg", SDXL)), Capped(("SaveVideo",))),
                    "b": Only(Capped((LORA, FLUX)), Capped(("LoraLoader",))),
                    "c": Only()}
    # a model on two inventories is no one's alone
    d = inventory("d", checkpoints=(FLUX,))
    assert exclusive([a, b, d], kinds_of(a, b, d))["b"] == Only(Capped((LORA,)), Capped(("LoraLoader",)))


def test_a_uniform_fleet_and_unlisted_backends_have_nothing_alone():
    a = inventory("a", checkpoints=(SD15, SDXL))
    assert exclusive([a], kinds_of(a)) == {"a": Only()}
    assert exclusive([a, a, a], kinds_of(a)) == {"a": Only()}  # backends sharing one inventory count once
    assert exclusive([a, UNLISTED], kinds_of(a)) == {"a": Only()}  # lists nothing: neither has nor lacks
    assert exclusive([], {}) == {}


def test_exclusive_caps_what_it_names_and_counts_the_rest():
    many = inventory("a", checkpoints=[f"m{i:02}.safetensors" for i in range(30)])
    other = inventory("b", checkpoints=(SD15,))
    only = exclusive([many, other], kinds_of(many, other), shown=5)["a"]
    assert only.models == Capped(tuple(f"m{i:02}.safetensors" for i in range(5)), 25)


@pytest.mark.parametrize("order", list(itertools.permutations("abc")))
def test_exclusive_does_not_depend_on_the_order_of_the_fleet(order):
    invs = {"a": inventory("a", checkpoints=(SD15, SDXL)), "b": inventory("b", checkpoints=(SD15, FLUX)),
            "c": inventory("c", checkpoints=(SD15,), loras=(LORA,))}
    only = exclusive([invs[d] for d in order], kinds_of(*invs.values()))
    assert {d: o.models.shown for d, o in only.items()} == {"a": (SDXL,), "b": (FLUX,), "c": (LORA,)}


def test_fleet_models_lists_each_model_with_the_backends_that_hold_it():
    a = inventory("a", checkpoints=(SD15, SDXL))
    b = inventory("b", checkpoints=(SD15,), loras=(LORA,))
    holders = [("x1", a), ("y", b), ("x2", a), ("u", UNLISTED)]
    models = fleet_models(holders, kinds_of(a, b))
    assert [(m.name, set(m.kinds), m.backends) for m in models] == [
        (LORA, {"loras"}, ("y",)), (SDXL, {"checkpoints"}, ("x1", "x2")), (SD15, {"checkpoints"}, ("x1", "x2", "y"))]


def test_fleet_models_of_one_backend_and_by_text():
    a = inventory("a", checkpoints=(SD15, SDXL))
    b = inventory("b", checkpoints=(SD15,), loras=(LORA,))
    holders = [("x1", a), ("y", b), ("x2", a)]
    kinds = kinds_of(a, b)
    # what y lists, and every backend that holds each of those
    assert [(m.name, m.backends) for m in fleet_models(holders, kinds, backend="y")] == [
        (LORA, ("y",)), (SD15, ("x1", "x2", "y"))]
    assert fleet_models(holders, kinds, backend="nobody") == []
    assert [m.name for m in fleet_models(holders, kinds, text="SDXL")] == [SDXL]
    assert [m.name for m in fleet_models(holders, kinds, text=".safetensors")] == [LORA, SDXL, SD15]
    assert [m.name for m in fleet_models(holders, kinds, backend="y", text="v1")] == [SD15]
    assert fleet_models([], {}) == []


def test_holdings_remembers_until_the_fleet_changes():
    a, b = inventory("a", checkpoints=(SD15, SDXL)), inventory("b", checkpoints=(SD15,))
    holdings = Holdings(shown=10)
    first = holdings.exclusive([a, b])
    assert first["a"].models.shown == (SDXL,)
    assert holdings.exclusive([b, a]) is first  # the same set: not worked out again
    assert set(holdings.kinds([a, b])) == {"a", "b"}
    c = inventory("c", checkpoints=(SDXL,))
    assert holdings.exclusive([a, c]) == {"a": Only(Capped((SD15,))), "c": Only()}
    assert set(holdings.kinds([a, c])) == {"a", "c"}  # b's are forgotten with it
