"""A backend's inventory from its /object_info, what a graph asks of one, and the refusals of what no backend of
the fleet could run (comfy.inventory)."""
from __future__ import annotations

import json

import pytest

from comfyart.comfy.inventory import (
    NotInFleet,
    admitted_needs,
    fleet_refusal,
    graph_needs,
    merge_object_info,
    missing_from_fleet,
    not_in_fleet,
    read_inventory,
)
from comfyart.comfy.validate import validate
from comfyart.emulator.catalogue import SPECS
from comfyart.policy.inventory import Fleet
from comfyart.policy.needs import needs_of_record
from tests.support.graphs import OBJECT_INFO, text_to_image_graph

SD15 = "v1-5-pruned-emaonly-fp16.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"


def emulated(checkpoints=(SD15,), without=()) -> dict:
    """The emulator's /object_info with these checkpoints, less the classes left out."""
    return {name: spec.object_info([], {"checkpoints": list(checkpoints)}) for name, spec in SPECS.items()
            if name not in without}


def fleet(*infos: dict) -> Fleet:
    inventories = tuple(read_inventory(info, str(i)) for i, info in enumerate(infos))
    merged: dict = {}
    for info in infos:
        merge_object_info(merged, json.loads(json.dumps(info)))
    return Fleet(merged, frozenset(c for inv in inventories for c in inv.choices), inventories)


def test_an_inventory_lists_node_classes_and_combo_choices_but_not_delivered_files():
    inv = read_inventory(OBJECT_INFO, "d", ["emb1", 3])
    assert inv.nodes == set(OBJECT_INFO)
    assert inv.choices == {("Sampler", "sampler"): {"euler", "ddim"}}  # LoadImage's image is delivered
    assert inv.embeddings == {"emb1"}
    assert read_inventory({"Odd": "not a class", "Node": {"input": {"required": {"x": []}}}}, "e").choices == {}


def test_identical_documents_share_their_strings():
    first, second = read_inventory(emulated(), "a"), read_inventory(emulated(), "b")
    assert next(iter(first.choices[("CheckpointLoaderSimple", "ckpt_name")])) is \
        next(iter(second.choices[("CheckpointLoaderSimple", "ckpt_name")]))


def test_graph_needs_are_its_node_classes_and_combo_values():
    inv = read_inventory(emulated(), "a")
    nodes, values = graph_needs(text_to_image_graph(), inv.choices)
    assert nodes == {"CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "KSampler", "VAEDecode",
                     "SaveImage"}
    assert ("CheckpointLoaderSimple", "ckpt_name", SD15) in values
    assert ("KSampler", "sampler_name", "euler") in values
    assert not any(name in ("text", "seed", "filename_prefix") for _, name, _ in values)


def test_merged_object_info_unions_combo_choices_and_classes():
    merged: dict = {}
    merge_object_info(merged, json.loads(json.dumps(OBJECT_INFO)))
    other = {"LoadImage": {"input": {"required": {"image": [["b.png", "z.png"], {}]}}}, "Extra": {"output": []}}
    merge_object_info(merged, other)
    assert merged["LoadImage"]["input"]["required"]["image"][0] == ["a.png", "b.png", "z.png"]
    assert "Extra" in merged and "EmptyImage" in merged


def test_admitted_needs_are_stored_for_a_graph_some_backend_can_run():
    both = fleet(emulated((SD15,)), emulated((SDXL,)))
    graph = text_to_image_graph()
    graph["4"]["inputs"]["ckpt_name"] = SDXL
    needs, cost = needs_of_record(admitted_needs(graph, both, tags=["gpu"], vram_mb=100))
    assert ("CheckpointLoaderSimple", "ckpt_name", SDXL) in needs.values
    assert needs.models == {SDXL} and needs.tags == {"gpu"} and needs.vram == 100 << 20 and cost > 0


def test_a_graph_no_one_backend_can_run_is_refused_naming_the_node():
    split = fleet(emulated((SDXL,)), emulated((SD15,), without=("SaveImage",)))
    with pytest.raises(NotInFleet) as refused:
        admitted_needs(text_to_image_graph(), split)  # SD15 is only where SaveImage is not
    assert "no backend has all it needs" in str(refused.value)
    assert refused.value.error["type"] == "prompt_outputs_failed_validation"
    assert refused.value.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"
    graph = text_to_image_graph()
    graph["4"]["inputs"]["ckpt_name"] = SDXL  # now the backend with SDXL runs it all
    assert fleet_refusal(graph, needs_of_record(admitted_needs(graph, split))[0], split) is None


def test_a_refusal_for_a_node_class_has_comfyuis_shape():
    split = fleet(emulated((SDXL,), without=("SaveImage",)), emulated((SD15,), without=("SaveImage",)))
    verdict = validate(text_to_image_graph(), split.object_info)
    assert missing_from_fleet(verdict)
    refusal = not_in_fleet(verdict)
    assert str(refusal) == "no backend has node SaveImage (Node ID '#9')"
    assert refusal.error["message"] == "Cannot execute because node SaveImage does not exist."


def test_a_value_not_in_the_fleets_lists_is_missing_from_the_fleet_and_named():
    graph = text_to_image_graph()
    graph["4"]["inputs"]["ckpt_name"] = "flux.safetensors"
    verdict = validate(graph, fleet(emulated()).object_info)
    assert missing_from_fleet(verdict)
    assert str(not_in_fleet(verdict)) == "no backend has ckpt_name 'flux.safetensors' (node 4)"
    graph = text_to_image_graph()
    graph["5"]["inputs"]["width"] = -1  # a real validation error: not the fleet's
    assert not missing_from_fleet(validate(graph, fleet(emulated()).object_info))
    graph = text_to_image_graph()
    graph["3"]["inputs"]["sampler_name"] = "eulr"  # a typo, not a model the fleet lacks
    assert not missing_from_fleet(validate(graph, fleet(emulated()).object_info))


def test_equal_choice_sets_are_kept_once_within_and_across_documents():
    lists = {"A": {"input": {"required": {"lora_name": [["x.safetensors", "y.safetensors"], {}]}}},
             "B": {"input": {"optional": {"lora": [["y.safetensors", "x.safetensors"], {}]}}}}
    first = read_inventory(lists, "a")
    assert first.choices[("A", "lora_name")] is first.choices[("B", "lora")]
    shared: dict = {}
    one, two = read_inventory(lists, "a", shared=shared), read_inventory(json.loads(json.dumps(lists)), "b",
                                                                         shared=shared)
    assert one.choices[("A", "lora_name")] is two.choices[("B", "lora")]
    assert len(shared) == 1


def test_an_inventory_knows_its_output_nodes():
    inv = read_inventory(OBJECT_INFO, "d")
    assert inv.outputs == {"SaveImage", "PreviewAny"}
    graph = {"1": {"class_type": "EmptyImage"}, "3": {"class_type": "SaveImage"}, "x": "not a node"}
    assert inv.output_nodes(graph) == {"3"}
