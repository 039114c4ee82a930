"""Workflow parameters (workflows.parameters): value checks for every type, binding order, seeds, and their
application to a graph."""
from __future__ import annotations

import json
import random

import pytest

from comfyart.workflows.parameters import (
    SEED_MAX,
    ParameterError,
    Target,
    apply,
    bind,
    check_value,
    image_inputs,
)
from tests.support.graphs import text_to_image_graph
from tests.support.workflows import param

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
