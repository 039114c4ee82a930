"""Workflow definitions (workflows.definition): definition checks, inference, names, and what a workflow file does at
start-up."""
from __future__ import annotations

import pytest

from comfyart.workflows.definition import (
    FileLoad,
    WorkflowDefinition,
    definition_problems,
    file_load_action,
    infer_parameters,
    workflow_name_problem,
)
from comfyart.workflows.parameters import (
    Parameter,
    ParamType,
    Target,
)
from tests.support.graphs import text_to_image_graph
from tests.support.workflows import param


def definition(params: dict, graph=None) -> WorkflowDefinition:
    return WorkflowDefinition(graph=graph or text_to_image_graph(), params=params)


@pytest.mark.parametrize("params, problem", [
    ({"seed": param("int", "99.seed")}, "params.seed: target node '99' is not in the graph"),
    ({"seed": param("int", "3.sead")}, "node 3 (KSampler) has no input 'sead' (it has: seed, steps"),
    ({"model": param("string", "3.model")}, "3.model is a link to another node, not a value"),
    ({"seed": param("string", "3.seed")}, "3.seed holds 1, which is not of type string"),
    ({"sampler": param("int", "3.sampler_name")}, "3.sampler_name holds 'euler', which is not of type int"),
    ({"cfg": param("int", "3.cfg")}, None),  # 7.0 is a whole number
    ({"cfg": param("float", "3.steps")}, None),  # an int input takes a float parameter's whole values
    ({"text": param("bool", "6.text")}, "not of type bool"),
    ({"text": param("image", "6.text", required=False)}, None),  # a string input can take a file name
    ({"2nd": param("int", "3.seed")}, "params.2nd: a parameter name is letters"),
    ({"seed": param("int", "3.seed", min=5, max=1)}, "min 5 exceeds max 1"),
    ({"text": param("string", "6.text", min=1)}, "min and max apply to int and float parameters only"),
    ({"s": param("choice", "3.sampler_name")}, "a choice parameter needs a non-empty 'choices' list"),
    ({"s": param("choice", "3.sampler_name", choices=[])}, "non-empty 'choices'"),
    ({"s": param("string", "3.sampler_name", choices=["a"])}, "'choices' applies to choice parameters only"),
    ({"steps": param("int", "3.steps", default=0, min=1)}, "params.steps.default: must be an integer >= 1, got 0"),
    ({"steps": param("int", "3.steps", default="20")}, "params.steps.default: must be an integer"),
    ({"s": param("choice", "3.sampler_name", choices=["euler"], default="ddim")}, "default: must be one of"),
    ({"text": param("string", "6.text", required=True, default="x")}, "a required parameter has no default"),
    ({"seed": param("int", "3.seed", default=-1, min=0)}, None),  # -1 means random, whatever the bounds
    ({"s": param("choice", "3.sampler_name", choices=["euler", "ddim"], default="ddim")}, None),
    ({"both": param("string", ["6.text", "7.text"])}, None),
    ({"both": param("string", ["6.text", "3.steps"])}, "3.steps holds 4, which is not of type string"),
])
def test_definition_problems(params, problem):
    problems = definition_problems(definition(params))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_definition_problems_explain_a_ui_format_graph():
    ui_graph = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    [problem] = definition_problems(WorkflowDefinition(graph=ui_graph))
    assert "UI format" in problem and "Export (API)" in problem


def test_target_shorthand_and_content_hash():
    long_form = definition({"seed": Parameter(type="int", target=[{"node": "3", "input": "seed"}])})
    shorthand = definition({"seed": Parameter(type="int", target="3.seed")})
    assert long_form.content_sha() == shorthand.content_sha()
    assert definition({"seed": param("int", "3.seed", min=0)}).content_sha() != shorthand.content_sha()
    assert Parameter(type="int", target="10:2.seed").target == [Target(node="10:2", input="seed")]
    for bad in ("seed", ".seed", "3."):
        with pytest.raises(ValueError, match="must look like NODE.INPUT"):
            Parameter(type="int", target=bad)


def test_infer_lists_literal_inputs_as_candidates():
    candidates = infer_parameters(text_to_image_graph())
    assert candidates["seed"].type is ParamType.INT and candidates["seed"].target == [Target(node="3", input="seed")]
    assert "random" in candidates["seed"].description
    assert candidates["cfg"].type is ParamType.FLOAT
    assert candidates["sampler_name"].type is ParamType.STRING
    assert candidates["ckpt_name"].target == [Target(node="4", input="ckpt_name")]
    # two nodes share "text": each is qualified by its node
    assert candidates["text_6"].target == [Target(node="6", input="text")]
    assert candidates["text_7"].target == [Target(node="7", input="text")]
    assert "text" not in candidates
    assert not any(t.input in ("model", "clip", "positive") for p in candidates.values() for t in p.target)
    # every candidate validates against its own graph, so the map can be stored as inferred
    assert definition_problems(definition(candidates)) == []


def test_infer_recognises_image_loaders_and_ambiguous_seeds():
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
             "2": {"class_type": "KSampler", "inputs": {"seed": 1, "denoise": 0.5}},
             "3": {"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 2, "add_noise": True}}}
    candidates = infer_parameters(graph)
    assert candidates["image"].type is ParamType.IMAGE
    assert candidates["add_noise"].type is ParamType.BOOL
    # two seed inputs: neither takes the random-seed name
    assert {"seed_2", "noise_seed"} <= set(candidates) and "seed" not in candidates


@pytest.mark.parametrize("stored, file_sha, file_mtime, expected", [
    (None, "a", 100, FileLoad.CREATE),
    (("a", 50), "a", 100, FileLoad.UNCHANGED),  # same content: no new version, whatever the times
    (("a", 500), "a", 100, FileLoad.UNCHANGED),
    (("a", 50), "b", 100, FileLoad.REPLACE),  # the file changed after the stored version
    (("a", 500), "b", 100, FileLoad.KEEP_STORED),  # an API edit made after the file was written
    (("a", 100), "b", 100, FileLoad.KEEP_STORED),  # a tie keeps what is stored
])
def test_file_load_action(stored, file_sha, file_mtime, expected):
    sha, updated = stored if stored else (None, None)
    assert file_load_action(stored_sha=sha, stored_updated_ms=updated, file_sha=file_sha,
                            file_mtime_ms=file_mtime) is expected


@pytest.mark.parametrize("name, ok", [
    ("text-to-image", True), ("sdxl_v2.1", True), ("A", True), ("x" * 128, True),
    ("", False), ("-leading", False), (".hidden", False), ("a/b", False), ("a b", False), ("x" * 129, False),
    ("..", False),
])
def test_workflow_names(name, ok):
    assert (workflow_name_problem(name) is None) is ok
