"""The graph validator (comfy.validate): ComfyUI's answers to an invalid prompt, node by node."""
from __future__ import annotations

import json

import pytest

from comfyart.comfy.validate import SUMMARY_CHARS, GraphRefused, output_nodes, validate
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


def test_combo_choices_old_and_v3_style_and_inputs_comfyart_delivers():
    load = {"1": {"class_type": "LoadImage", "inputs": {"image": "c.png"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert validate(load, OBJECT_INFO).node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"
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


# ------------------------------------------------------------------ ComfyUI's own answers (issue 20, item 16)
def test_a_link_to_a_missing_node_fails_the_node_that_links_as_comfyui_does():
    # as recorded from ComfyUI (04_validation_errors, "link to a node id that does not exist")
    verdict = validate(invert_graph(**{"2": {"image": ["99", 0]}}), OBJECT_INFO)
    assert verdict.error == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                             "details": "", "extra_info": {}}
    assert verdict.node_errors == {"2": {"errors": [{
        "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
        "details": "'99'",
        "extra_info": {"input_name": "images", "input_config": ["IMAGE", {}], "exception_message": "'99'",
                       "exception_type": "KeyError", "traceback": [], "linked_node": ["2", 0]}}],
        "dependent_outputs": ["3"], "class_type": "ImageInvert"}}


def test_an_output_node_that_links_to_a_missing_node_fails_itself():
    verdict = validate(invert_graph(**{"3": {"images": ["99", 0]}}), OBJECT_INFO)
    assert verdict.node_errors == {"3": {"errors": [{
        "type": "exception_during_validation", "message": "Exception when validating node", "details": "'99'",
        "extra_info": {"exception_type": "KeyError", "traceback": []}}],
        "dependent_outputs": ["3"], "class_type": "SaveImage"}}
    assert verdict.error["details"] == "Exception when validating node: '99'"


def test_a_refusal_names_a_missing_link_target_in_words_not_as_a_keyerror():
    inner = GraphRefused(validate(invert_graph(**{"2": {"image": ["99", 0]}}), OBJECT_INFO))
    assert str(inner).endswith("node 2 (ImageInvert): an input links to node 99, which is not in the graph")
    outer = GraphRefused(validate(invert_graph(**{"3": {"images": ["99", 0]}}), OBJECT_INFO))
    assert str(outer).endswith("node 3 (SaveImage): an input links to node 99, which is not in the graph")
    graph = invert_graph()
    del graph["1"]["inputs"]
    assert str(GraphRefused(validate(graph, OBJECT_INFO))).endswith("node 1 (EmptyImage): the node has no 'inputs'")


def test_a_node_without_inputs_is_reported_like_a_missing_link():
    graph = invert_graph()
    del graph["1"]["inputs"]
    entry = validate(graph, OBJECT_INFO).node_errors["1"]
    assert entry["errors"][0]["type"] == "exception_during_inner_validation"
    assert entry["errors"][0]["details"] == "'inputs'" and entry["class_type"] == "EmptyImage"


def test_a_missing_image_is_an_invalid_image_file_and_no_file_is_listed():
    # as recorded from ComfyUI (04_validation_errors, "combo value not in list (LoadImage missing file)")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "does-not-exist.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    verdict = validate(graph, OBJECT_INFO)
    assert verdict.node_errors == {"1": {"errors": [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "image - Invalid image file: does-not-exist.png", "extra_info": {"input_name": "image"}}],
        "dependent_outputs": ["2"], "class_type": "LoadImage"}}
    assert "a.png" not in repr(verdict)  # another client's upload
    for present in ("a.png", "sub/other.png", "x.png [output]", "y.png [input]"):  # listed, or the backend checks it
        graph["1"]["inputs"]["image"] = present
        assert validate(graph, OBJECT_INFO).error is None, present
    graph["1"]["inputs"]["image"] = 5
    assert "Invalid image file: 5" in repr(validate(graph, OBJECT_INFO).node_errors)


def test_other_upload_kinds_say_their_kind():
    info = {**OBJECT_INFO, "LoadAudio": {"input": {"required": {"audio": [["a.wav"], {"audio_upload": True}]}},
                                         "output": ["AUDIO"], "output_node": False},
            "Out": {"input": {"required": {"x": ["*", {}]}}, "output": [], "output_node": True}}
    graph = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "b.wav"}},
             "2": {"class_type": "Out", "inputs": {"x": ["1", 0]}}}
    assert validate(graph, info).node_errors["1"]["errors"][0]["details"] == "audio - Invalid audio file: b.wav"


def test_a_long_list_of_choices_is_not_sent_back():
    many = [f"model{i}.safetensors" for i in range(21)]
    info = {**OBJECT_INFO, "Sampler": {"input": {"required": {"sampler": [many, {}]}}, "output": ["LATENT"]}}
    graph = {"4": {"class_type": "Sampler", "inputs": {"sampler": "nope"}},
             "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    error = validate(graph, info).node_errors["4"]["errors"][0]
    assert error["details"] == "sampler: 'nope' not in (list of length 21)"
    assert error["extra_info"] == {"input_name": "sampler", "input_config": None, "received_value": "nope"}
    info["Sampler"]["input"]["required"]["sampler"] = [many[:20], {}]
    assert "model19.safetensors" in validate(graph, info).node_errors["4"]["errors"][0]["details"]


@pytest.mark.parametrize("width, message", [  # as a real ComfyUI 0.3.64 answers them: the number whole
    (1e308, f"Value {int(1e308)} bigger than max of 16384"),  # int(1e308) has 309 digits
    (10**29 - 1, "Value 99999999999999999999999999999 bigger than max of 16384"),
    (-10**30, "Value -1000000000000000000000000000000 smaller than min of 1"),
], ids=["1e308", "10**29-1", "-10**30"])
def test_a_giant_number_is_quoted_whole_as_comfyui_does(width, message):
    error = validate(invert_graph(**{"1": {"width": width}}), OBJECT_INFO).node_errors["1"]["errors"][0]
    assert error["message"] == message


@pytest.mark.parametrize("inputs, exception_message", [
    (3, "argument of type 'int' is not iterable"),
    (None, "argument of type 'NoneType' is not iterable"),
    (1.5, "argument of type 'float' is not iterable"),
    (True, "argument of type 'bool' is not iterable"),
])
def test_inputs_that_are_not_an_object_fail_their_node_as_comfyui_does(inputs, exception_message):
    """ComfyUI's answers (a real 0.3.64): the TypeError of ``x not in inputs``, not a crash of the validator."""
    verdict = validate({"1": {"class_type": "SaveImage", "inputs": inputs}}, OBJECT_INFO)
    assert verdict.error == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                             "details": f"Exception when validating node: {exception_message}", "extra_info": {}}
    assert verdict.node_errors == {"1": {"errors": [{
        "type": "exception_during_validation", "message": "Exception when validating node",
        "details": exception_message, "extra_info": {"exception_type": "TypeError", "traceback": []}}],
        "dependent_outputs": ["1"], "class_type": "SaveImage"}}
    upstream = validate(invert_graph(**{"2": {}}) | {"2": {"class_type": "ImageInvert", "inputs": inputs}},
                        OBJECT_INFO)
    assert upstream.node_errors["2"]["errors"] == [{
        "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
        "details": exception_message, "extra_info": {
            "input_name": "images", "input_config": ["IMAGE", {}], "exception_message": exception_message,
            "exception_type": "TypeError", "traceback": [], "linked_node": ["2", 0]}}]
    assert upstream.node_errors["2"]["dependent_outputs"] == ["3"]


@pytest.mark.parametrize("inputs", [[], "abc"])
def test_inputs_given_as_a_list_or_text_miss_every_input(inputs):
    verdict = validate({"1": {"class_type": "SaveImage", "inputs": inputs}}, OBJECT_INFO)
    assert [e["type"] for e in verdict.node_errors["1"]["errors"]] == ["required_input_missing"] * 2


def test_an_empty_list_as_prompt_has_no_outputs_as_in_comfyui():
    assert validate([], OBJECT_INFO).error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                                               "details": "", "extra_info": {}}
    assert validate([1], OBJECT_INFO).error["type"] == "invalid_prompt"  # ComfyUI: a 500


def test_an_infinite_number_is_an_invalid_input_not_a_crash():
    error = validate(invert_graph(**{"1": {"width": float("inf")}}), OBJECT_INFO).node_errors["1"]["errors"][0]
    assert error["type"] == "invalid_input_type"
    assert error["details"] == "width, inf, cannot convert float infinity to integer"
    assert error["extra_info"]["received_value"] == "inf"  # an answer is strict JSON: no Infinity in it
    json.dumps(error, allow_nan=False)


def test_a_refusal_reads_as_one_short_line():
    verdict = validate(invert_graph(**{"1": {"width": 10**40, "height": 0}}), OBJECT_INFO)
    refused = GraphRefused(verdict)
    assert refused.error == verdict.error and refused.node_errors == verdict.node_errors
    assert str(refused) == ("Prompt outputs failed validation: node 1 (EmptyImage): Value 10000000000000000000… "
                            "bigger than max of 16384: width; node 1 (EmptyImage): Value 0 smaller than min of 1: "
                            "height")
    assert str(GraphRefused(validate({"1": invert_graph()["1"]}, OBJECT_INFO))) == "Prompt has no outputs"
    unknown = GraphRefused(validate({**invert_graph(), "9": {"class_type": "Nope", "inputs": {}}}, OBJECT_INFO))
    assert str(unknown) == "Cannot execute because node Nope does not exist. (Node ID '#9')"
    many = {str(i): {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 1, "color": 0}} for i in range(30)}
    many.update({f"out{i}": {"class_type": "PreviewAny", "inputs": {"source": [str(i), 0]}} for i in range(30)})
    text = str(GraphRefused(validate(many, OBJECT_INFO)))
    assert len(text) <= SUMMARY_CHARS and text.endswith("…") and "\n" not in text
