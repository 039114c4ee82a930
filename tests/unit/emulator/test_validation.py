"""The emulator's prompt validation (emulator.validation): ComfyUI's answers, as execution.py and LoadImage's
VALIDATE_INPUTS give them, for the cases comfyart's own validator (comfy.validate) copies."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfyart.emulator.engine import DEFAULT_MODELS
from comfyart.emulator.validation import validate_prompt
from tests.support.graphs import basic_graph, default_editor_graph

MODELS = {"checkpoints": ["a.safetensors"]}


def check(graph: dict, input_dir: Path, models: dict | None = None) -> tuple:
    return validate_prompt(graph, None, str(input_dir), models or MODELS)


def test_a_link_to_a_missing_node_fails_the_node_that_links(tmp_path):
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["99", 0]
    ok, error, _, node_errors = check(graph, tmp_path)
    assert not ok and error["type"] == "prompt_outputs_failed_validation"
    assert list(node_errors) == ["2"] and node_errors["2"]["class_type"] == "ImageInvert"
    reason = node_errors["2"]["errors"][0]
    assert reason["type"] == "exception_during_inner_validation" and reason["details"] == "'99'"
    assert reason["extra_info"]["input_name"] == "images" and reason["extra_info"]["linked_node"] == ["2", 0]


def test_a_missing_image_is_an_invalid_image_file_and_no_file_is_listed(tmp_path):
    (tmp_path / "someone-elses.png").write_bytes(b"x")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "does-not-exist.png"}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    ok, _, _, node_errors = check(graph, tmp_path)
    assert not ok and node_errors["1"]["errors"] == [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "image - Invalid image file: does-not-exist.png", "extra_info": {"input_name": "image"}}]
    assert "someone-elses" not in repr(node_errors)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    graph["1"]["inputs"]["image"] = "sub/b.png"  # a subfolder, as ComfyUI takes it
    assert check(graph, tmp_path)[0]


def test_an_infinite_int_is_an_invalid_input_type(tmp_path):
    ok, _, _, node_errors = check(basic_graph(width=float("inf")), tmp_path)  # JSON's 1e999
    assert not ok and node_errors["1"]["errors"][0]["type"] == "invalid_input_type"
    assert node_errors["1"]["errors"][0]["details"] == "width, inf, cannot convert float infinity to integer"


@pytest.mark.parametrize("count, listed", [(20, True), (21, False)])
def test_a_long_list_of_choices_is_not_sent_back(tmp_path, count, listed):
    models = {"checkpoints": [f"m{i}.safetensors" for i in range(count)]}
    graph = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
             "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}}
    reason = check(graph, tmp_path, models)[3]["4"]["errors"][0]
    assert reason["type"] == "value_not_in_list"
    if listed:
        assert "m19.safetensors" in reason["details"]
        assert reason["extra_info"]["input_config"][0] == models["checkpoints"]
    else:
        assert reason["details"] == f"ckpt_name: 'nope.safetensors' not in (list of length {count})"
        assert reason["extra_info"]["input_config"] is None


@pytest.mark.parametrize("inputs, exception_message", [
    (3, "argument of type 'int' is not iterable"), (None, "argument of type 'NoneType' is not iterable")])
def test_inputs_that_are_not_an_object_fail_their_node_as_comfyui_does(tmp_path, inputs, exception_message):
    """A real ComfyUI 0.3.64's answers: the TypeError of ``x not in inputs``, filed under the node (an output) or
    under the node one level down from the one that links to it."""
    ok, error, _, node_errors = check({"1": {"class_type": "SaveImage", "inputs": inputs}}, tmp_path)
    assert not ok and error["details"] == f"Exception when validating node: {exception_message}"
    assert node_errors["1"]["errors"] == [{"type": "exception_during_validation",
                                           "message": "Exception when validating node", "details": exception_message,
                                           "extra_info": {"exception_type": "TypeError", "traceback": []}}]
    graph = basic_graph()
    graph["2"]["inputs"] = inputs
    ok, _, _, node_errors = check(graph, tmp_path)
    reason = node_errors["2"]["errors"][0]
    assert not ok and reason["type"] == "exception_during_inner_validation"
    assert reason["details"] == exception_message and reason["extra_info"]["exception_type"] == "TypeError"
    assert node_errors["2"]["dependent_outputs"] == ["3"]


def test_the_editors_default_workflow_is_valid_where_its_models_are(tmp_path):
    ok, error, outputs, node_errors = check(default_editor_graph(), tmp_path, dict(DEFAULT_MODELS))
    assert (ok, error, outputs, node_errors) == (True, {}, ["9"], {})


def test_a_loaders_file_is_checked_against_its_own_model_folder(tmp_path):
    models = {**DEFAULT_MODELS, "vae": []}
    ok, _, _, node_errors = check(default_editor_graph(), tmp_path, models)
    assert not ok and list(node_errors) == ["63"]
    assert node_errors["63"]["errors"] == [{
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "vae_name: 'ae.safetensors' not in ['pixel_space']",
        "extra_info": {"input_name": "vae_name", "input_config": [["pixel_space"], {}],
                       "received_value": "ae.safetensors"}}]


def test_an_optional_input_given_is_checked_as_comfyui_checks_it(tmp_path):
    graph = default_editor_graph()
    graph["62"]["inputs"]["device"] = "tpu"
    ok, _, _, node_errors = check(graph, tmp_path, dict(DEFAULT_MODELS))
    assert not ok and node_errors["62"]["errors"][0]["details"] == "device: 'tpu' not in ['default', 'cpu']"
    del graph["62"]["inputs"]["device"]  # left out: the node's own default
    assert check(graph, tmp_path, dict(DEFAULT_MODELS))[0]
