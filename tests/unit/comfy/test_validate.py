"""The graph validator (comfy.validate): ComfyUI's answers to an invalid prompt, node by node."""
from __future__ import annotations

import pytest

from comfyart.comfy.validate import output_nodes, validate
from tests.support.graphs import OBJECT_INFO, invert_graph


def test_a_valid_graph_passes_with_its_outputs():
    verdict = validate(invert_graph(), OBJECT_INFO)
    assert verdict.error is None and verdict.node_errors == {} and verdict.outputs == ["3"]


@pytest.mark.parametrize("node, expected_type, expected_message", [
    ({"class_type": "Nope", "inputs": {}}, "invalid_prompt", "Cannot execute because node Nope does not exist."),
    ({"inputs": {}}, "invalid_prompt", "Cannot execute because a node is missing the class_type property."),
])
def test_unknown_or_missing_class_types_are_invalid_prompts(node, expected_type, expected_message):
    verdict = validate({**invert_graph(), "9": node}, OBJECT_INFO)
    assert verdict.error["type"] == expected_type and verdict.error["message"] == expected_message
    assert verdict.error["details"] == "Node ID '#9'"


@pytest.mark.parametrize("bad", [{}, "not a graph", {"1": invert_graph()["1"]}])
def test_graphs_without_outputs_are_refused(bad):
    verdict = validate(bad, OBJECT_INFO)
    assert verdict.error["type"] in ("prompt_no_outputs", "invalid_prompt")


@pytest.mark.parametrize("node, inputs, error_type", [
    ("1", {"width": 0}, "value_smaller_than_min"),
    ("1", {"width": 20000}, "value_bigger_than_max"),
    ("1", {"width": "wide"}, "invalid_input_type"),
    ("2", {"image": ["1"]}, "bad_linked_input"),
    ("3", {"images": ["1", 5]}, None),  # a slot the producer lacks: nothing to compare, ComfyUI fails it at run time
])
def test_input_problems_are_filed_under_their_node_with_the_outputs_they_block(node, inputs, error_type):
    verdict = validate(invert_graph(**{node: inputs}), OBJECT_INFO)
    if error_type is None:
        assert verdict.error is None
        return
    assert verdict.error["type"] == "prompt_outputs_failed_validation"
    entry = verdict.node_errors[node]
    assert entry["errors"][0]["type"] == error_type and entry["dependent_outputs"] == ["3"]
    assert entry["class_type"] == invert_graph()[node]["class_type"]


def test_missing_inputs_type_mismatches_and_dangling_links():
    missing = validate({**invert_graph(), "1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}},
                       OBJECT_INFO)
    assert missing.node_errors["1"]["errors"][0] == {"type": "required_input_missing",
                                                     "message": "Required input is missing", "details": "color",
                                                     "extra_info": {"input_name": "color"}}
    mismatch = validate({**invert_graph(), "4": {"class_type": "Sampler", "inputs": {"sampler": "euler"}},
                         "3": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}},
                        OBJECT_INFO)
    assert mismatch.node_errors["3"]["errors"][0]["type"] == "return_type_mismatch"
    assert "received_type(LATENT) mismatch input_type(IMAGE)" in mismatch.node_errors["3"]["errors"][0]["details"]
    dangling = validate(invert_graph(**{"2": {"image": ["7", 0]}}), OBJECT_INFO)
    assert dangling.node_errors["7"]["errors"][0]["type"] == "exception_during_inner_validation"


def test_combo_choices_old_and_v3_style_and_inputs_comfyart_delivers():
    load = {"1": {"class_type": "LoadImage", "inputs": {"image": "c.png"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert validate(load, OBJECT_INFO).node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    assert validate(load, OBJECT_INFO, also_allowed=lambda v: v == "c.png").error is None
    sampler = {"4": {"class_type": "Sampler", "inputs": {"sampler": "heun"}},
               "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    assert validate(sampler, OBJECT_INFO).node_errors["4"]["errors"][0]["type"] == "value_not_in_list"
    sampler["4"]["inputs"].update(sampler="ddim", denoise=2.0)
    assert validate(sampler, OBJECT_INFO).node_errors["4"]["errors"][0]["type"] == "value_bigger_than_max"


def test_one_valid_output_is_enough_and_the_other_is_reported():
    g = {**invert_graph(), "4": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 1, "color": 0}},
         "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "y"}}}
    verdict = validate(g, OBJECT_INFO)
    assert verdict.error is None and verdict.outputs == ["3"]
    assert verdict.node_errors["4"]["dependent_outputs"] == ["5"]
    assert validate(g, OBJECT_INFO, targets=["5"]).error["type"] == "prompt_outputs_failed_validation"
    assert validate(g, OBJECT_INFO, targets=["2"]).error["type"] == "prompt_no_outputs"
    assert output_nodes(g, OBJECT_INFO) == ["3", "5"]


def test_a_cycle_does_not_hang_the_validator():
    g = {"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    assert validate(g, OBJECT_INFO).outputs == ["3"]
