"""Workflow parameters (workflows.parameters): value checks for every type, binding order, seeds, and their
application to a graph."""
from __future__ import annotations

import json
import random

import pytest

from comfyart.workflows.parameters import (
    SEED_LIMIT,
    SEED_MAX,
    Bounds,
    ParameterError,
    Target,
    apply,
    bind,
    bounds_of,
    check_value,
    image_inputs,
    shown,
)
from tests.support.graphs import T2I_OBJECT_INFO, text_to_image_graph
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
    result = check_value(param(kind, "5.width", **extra), value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("kind, extra, value, reason", [
    ("int", {}, 5.5, "must be an integer"),
    ("int", {}, "5", "must be an integer"),
    ("int", {}, True, "must be an integer"),  # a bool is not a number here, although Python says it is
    ("int", {}, None, "must be an integer"),
    ("int", {"min": 1}, 0, "must be an integer >= 1, got 0"),
    ("int", {"max": 10}, 11, "must be an integer <= 10, got 11"),
    ("float", {}, "0.5", "must be a number"),
    ("float", {}, float("nan"), "must be a number"),
    ("float", {}, float("inf"), "must be a number"),
    ("float", {}, False, "must be a number"),
    ("float", {"min": 0.0, "max": 1.0}, 1.5, "must be a number between 0 and 1, got 1.5"),
    ("float", {"min": 0.5}, 0.25, "must be a number >= 0.5, got 0.25"),
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
        check_value(param(kind, "5.width", **extra), value)
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
    assert problems["steps"] == "must be an integer between 1 and 150, got 0"
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
    with pytest.raises(ParameterError, match="must be an integer between 10 and 12, got 13"):
        bind(bounded, {"seed": 13}, random.Random(1))
    fixed_default = {"seed": param("int", "3.seed", default=42)}
    assert bind(fixed_default, {}, random.Random(1)) == {"seed": 42}
    random_default = {"seed": param("int", "3.seed", default=-1)}
    assert bind(random_default, {}, random.Random(1))["seed"] >= 0


def test_only_a_parameter_named_seed_is_random():
    noise = {"noise": param("int", "3.seed", min=0)}
    assert bind(noise, {}, random.Random(1)) == {}  # left to the graph
    with pytest.raises(ParameterError, match=r"must be an integer between 0 and 18446744073709551615, got -1"):
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


# ------------------------------------------------------------------ bounds (issue 20, item 9)
STEPS = param("int", "3.steps", min=1, max=10000)


@pytest.mark.parametrize("value, expected", [
    (1, 1), (10000, 10000), (5.0, 5), (10000.0, 10000), (2, 2),
])
def test_an_int_within_its_bounds_is_taken_as_an_int(value, expected):
    result = check_value(STEPS, value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, got", [
    (0, "0"),  # below
    (10001, "10001"),  # above
    (-1, "-1"),
    (5.5, "5.5"),  # not an integer
    (True, "True"),  # a bool is not a number here
    (False, "False"),
    ("5", "'5'"),
    (None, "None"),
    (float("inf"), "inf"),
    (float("nan"), "nan"),
    (1e308, "1e+308"),  # huge, and quoted as given: never 309 digits
    (99999999999999999999999999999, "99999999999999999999…"),
    (-10**400, "-1000000000000000000…"),
])
def test_an_int_outside_its_bounds_says_the_bounds_and_quotes_the_value_short(value, got):
    with pytest.raises(ValueError) as caught:
        check_value(STEPS, value, name="steps")
    assert str(caught.value) == f"must be an integer between 1 and 10000, got {got}"
    assert len(str(caught.value)) < 80


@pytest.mark.parametrize("value, ok", [
    (0, True), (SEED_LIMIT, True), (SEED_LIMIT + 1, False), (-2, False), (float(SEED_LIMIT), False),
    (99999999999999999999999999999, False), (1e308, False), (12345.0, True),
])
def test_a_seed_has_comfyuis_bounds_when_it_declares_none(value, ok):
    seed = param("int", "3.seed")
    if ok:
        assert check_value(seed, value, name="seed") == int(value)
        return
    with pytest.raises(ValueError, match=r"^must be an integer between 0 and 18446744073709551615, got "):
        check_value(seed, value, name="seed")


def test_minus_one_asks_a_seed_parameter_for_a_random_seed_and_nothing_else():
    assert check_value(param("int", "3.seed"), -1, name="seed") == -1
    assert check_value(param("int", "3.seed"), -1.0, name="seed") == -1
    with pytest.raises(ValueError, match="between 0 and"):
        check_value(param("int", "3.seed"), -1, name="noise")  # an int aimed at a seed input: bounded alike


def test_bounds_come_from_the_parameter_the_seed_rule_and_every_target_in_object_info():
    graph = text_to_image_graph()
    steps = param("int", "3.steps", min=2)
    assert bounds_of(steps, "steps") == Bounds(2, None)
    assert bounds_of(steps, "steps", graph, T2I_OBJECT_INFO) == Bounds(2, 10000)
    assert bounds_of(param("int", "3.steps", min=0, max=50), "steps", graph, T2I_OBJECT_INFO) == Bounds(1, 50)
    assert bounds_of(param("int", "3.seed"), "seed") == Bounds(0, SEED_LIMIT)
    narrow_seed = {**T2I_OBJECT_INFO, "KSampler": {"input": {"required": {"seed": ["INT", {"min": 0, "max": 99}]}}}}
    assert bounds_of(param("int", "3.seed"), "seed", graph, narrow_seed) == Bounds(0, 99)
    size = param("int", ["5.width", "3.steps"])
    assert bounds_of(size, "size", graph, T2I_OBJECT_INFO) == Bounds(16, 10000)  # every target's, together
    # an unknown node class, a link, a missing input or a combo: nothing more is known
    for target in ("3.model", "3.sampler_name", "9.nope"):
        assert bounds_of(param("int", target), "x", graph, T2I_OBJECT_INFO) == Bounds()
    assert bounds_of(steps, "steps", graph, {}) == Bounds(2, None)
    cfg = param("float", "3.cfg")
    assert bounds_of(cfg, "cfg", graph, T2I_OBJECT_INFO) == Bounds(0.0, 100.0)


def test_bind_checks_values_against_the_fleets_bounds_when_known():
    params = {"steps": param("int", "3.steps"), "seed": param("int", "3.seed")}
    graph = text_to_image_graph()
    assert bind(params, {"steps": 10001, "seed": 1}, random.Random(1)) == {"steps": 10001, "seed": 1}
    with pytest.raises(ParameterError) as caught:
        bind(params, {"steps": 10001, "seed": 99999999999999999999999999999}, random.Random(1),
             graph=graph, object_info=T2I_OBJECT_INFO)
    assert caught.value.problems == {
        "steps": "must be an integer between 1 and 10000, got 10001",
        "seed": "must be an integer between 0 and 18446744073709551615, got 99999999999999999999…"}
    with pytest.raises(ParameterError, match="seed: must be an integer between 0 and 18446744073709551615"):
        bind(params, {"seed": 2**64}, random.Random(1))  # no backend has answered: the seed rule still holds
    narrow_seed = {"KSampler": {"input": {"required": {"seed": ["INT", {"min": 5, "max": 6}]}}}}
    seeds = {bind(params, {}, random.Random(i), graph=graph, object_info=narrow_seed)["seed"] for i in range(30)}
    assert seeds == {5, 6}  # a random seed stays within the input's bounds too


def test_shown_cuts_long_values():
    assert shown(12) == "12" and shown("abc") == "'abc'" and shown(SEED_LIMIT) == str(SEED_LIMIT)
    assert shown("x" * 100) == "'" + "x" * 38 + "…"
    assert shown(10**25) == "1" + "0" * 19 + "…"
