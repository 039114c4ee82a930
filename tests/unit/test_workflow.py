"""Workflow templates: value checks for every type, binding order, seeds, application, definition checks,
inference, and what a workflow file does at start-up."""
from __future__ import annotations

import json
import random

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
    SEED_MAX,
    Parameter,
    ParameterError,
    ParamType,
    Target,
    apply,
    bind,
    check_value,
    image_inputs,
)
from tests.conftest import text_to_image_graph


def param(kind: str, target="3.seed", **extra) -> Parameter:
    return Parameter(type=kind, target=target, **extra)


CHOICES = ["euler", "ddim"]


@pytest.mark.parametrize("kind, extra, value, expected", [
    ("int", {}, 5, 5),
    ("int", {}, 5.0, 5),  # an integral float, as JavaScript clients send
    ("int", {}, -3, -3),
    ("int", {"min": 1, "max": 10}, 1, 1),
    ("int", {"min": 1, "max": 10}, 10, 10),
    ("float", {}, 2, 2),
    ("float", {}, 0.25, 0.25),
    ("float", {"min": 0, "max": 1}, 1.0, 1.0),
    ("string", {}, "", ""),
    ("string", {}, "a lighthouse", "a lighthouse"),
    ("bool", {}, True, True),
    ("bool", {}, False, False),
    ("choice", {"choices": CHOICES}, "ddim", "ddim"),
    ("choice", {"choices": [1, 2]}, 2, 2),
    ("image", {}, {"input": "abc.png"}, {"input": "abc.png"}),
    ("image", {}, {"task": "01T", "filename": "a.png"}, {"task": "01T", "filename": "a.png"}),
])
def test_accepted_values(kind, extra, value, expected):
    result = check_value(param(kind, **extra), value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("kind, extra, value, reason", [
    ("int", {}, 5.5, "must be an integer"),
    ("int", {}, "5", "must be an integer"),
    ("int", {}, True, "must be an integer"),  # a bool is not a number here, although Python says it is
    ("int", {}, None, "must be an integer"),
    ("int", {"min": 1}, 0, "0 is below the minimum 1"),
    ("int", {"max": 10}, 11, "11 is above the maximum 10"),
    ("float", {}, "0.5", "must be a number"),
    ("float", {}, float("nan"), "must be a number"),
    ("float", {}, float("inf"), "must be a number"),
    ("float", {}, False, "must be a number"),
    ("float", {"min": 0.0, "max": 1.0}, 1.5, "above the maximum 1"),
    ("float", {"min": 0.5}, 0.25, "below the minimum 0.5"),
    ("string", {}, 3, "must be a string"),
    ("string", {}, ["a"], "must be a string"),
    ("bool", {}, 1, "must be true or false"),
    ("bool", {}, "true", "must be true or false"),
    ("choice", {"choices": CHOICES}, "heun", "must be one of ['euler', 'ddim']"),
    ("choice", {"choices": [1, 2]}, "1", "must be one of"),
    ("choice", {"choices": [1, 2]}, True, "must be one of"),  # True == 1 in Python; not here
    ("image", {}, "example.png", "must be an upload"),
    ("image", {}, "https://example.com/a.png", "must be an upload"),
    ("image", {}, {}, "must be an upload"),
    ("image", {}, {"input": "a.png", "task": "01T"}, "must be an upload"),
    ("image", {}, {"task": "01T"}, "must be an upload"),
    ("image", {}, {"input": ""}, "must be an upload"),
    ("image", {}, {"input": 3}, "must be an upload"),
    ("image", {}, {"url": "http://x"}, "must be an upload"),
])
def test_refused_values(kind, extra, value, reason):
    with pytest.raises(ValueError, match=None) as caught:
        check_value(param(kind, **extra), value)
    assert reason in str(caught.value)


MAP = {
    "prompt": param("string", "6.text", required=True),
    "steps": param("int", "3.steps", default=20, min=1, max=150),
    "cfg": param("float", "3.cfg", min=0, max=30),
    "seed": param("int", "3.seed", min=0),
}


def test_bind_order_request_then_default_then_graph():
    values = bind(MAP, {"prompt": "a cat", "seed": 7}, random.Random(1))
    # steps from its default; cfg left out, so the graph's own value stays
    assert values == {"prompt": "a cat", "steps": 20, "seed": 7}
    values = bind(MAP, {"prompt": "a cat", "steps": 30, "cfg": 4.5, "seed": 7}, random.Random(1))
    assert values == {"prompt": "a cat", "steps": 30, "cfg": 4.5, "seed": 7}


def test_bind_names_every_parameter_at_fault():
    with pytest.raises(ParameterError) as caught:
        bind(MAP, {"steps": 0, "cfg": "high", "colour": "red"}, random.Random(1))
    problems = caught.value.problems
    assert set(problems) == {"prompt", "steps", "cfg", "colour"}
    assert problems["prompt"] == "required"
    assert "below the minimum 1" in problems["steps"]
    assert "must be a number" in problems["cfg"]
    assert problems["colour"].startswith("unknown parameter (this workflow takes: prompt, steps, cfg, seed)")
    assert str(caught.value).startswith("params.colour: unknown parameter")


@pytest.mark.parametrize("request_seed", ["omitted", -1])
def test_random_seed_is_chosen_and_recorded(request_seed):
    request = {"prompt": "x"} if request_seed == "omitted" else {"prompt": "x", "seed": request_seed}
    first = bind(MAP, request, random.Random(1))["seed"]
    second = bind(MAP, request, random.Random(2))["seed"]
    assert 0 <= first <= SEED_MAX and 0 <= second <= SEED_MAX and first != second
    assert bind(MAP, request, random.Random(1))["seed"] == first  # the rng decides, nothing else


def test_random_seed_respects_bounds_and_fixed_seeds_stay():
    bounded = {"seed": param("int", "3.seed", min=10, max=12)}
    seen = {bind(bounded, {}, random.Random(i))["seed"] for i in range(50)}
    assert seen == {10, 11, 12}
    assert bind(bounded, {"seed": 11}, random.Random(1)) == {"seed": 11}
    with pytest.raises(ParameterError, match="above the maximum 12"):
        bind(bounded, {"seed": 13}, random.Random(1))
    fixed_default = {"seed": param("int", "3.seed", default=42)}
    assert bind(fixed_default, {}, random.Random(1)) == {"seed": 42}
    random_default = {"seed": param("int", "3.seed", default=-1)}
    assert bind(random_default, {}, random.Random(1))["seed"] >= 0


def test_only_a_parameter_named_seed_is_random():
    noise = {"noise": param("int", "3.seed", min=0)}
    assert bind(noise, {}, random.Random(1)) == {}  # left to the graph
    with pytest.raises(ParameterError, match="below the minimum 0"):
        bind(noise, {"noise": -1}, random.Random(1))


def test_apply_writes_every_target_and_leaves_the_stored_graph_alone():
    graph = text_to_image_graph()
    original = json.dumps(graph, sort_keys=True)
    params = {"text": param("string", ["6.text", "7.text"]), "seed": param("int", "3.seed"),
              "size": param("int", [Target(node="5", input="width"), "5.height"])}
    resolved = apply(graph, params, {"text": "same", "seed": 9, "size": 640}, {})
    assert resolved["6"]["inputs"]["text"] == resolved["7"]["inputs"]["text"] == "same"
    assert resolved["3"]["inputs"]["seed"] == 9
    assert resolved["5"]["inputs"]["width"] == resolved["5"]["inputs"]["height"] == 640
    assert resolved["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert json.dumps(graph, sort_keys=True) == original


def test_apply_gives_image_parameters_the_backend_file_name():
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}}}
    params = {"image": param("image", "1.image")}
    values = {"image": {"input": "ab.png"}}
    assert [i.param for i in image_inputs(params, values)] == ["image"]
    assert apply(graph, params, values, {"image": "comfyart-ab.png"})["1"]["inputs"]["image"] == "comfyart-ab.png"


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
    ({"steps": param("int", "3.steps", default=0, min=1)}, "params.steps.default: 0 is below the minimum 1"),
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
