"""The prompt text a task list shows: a workflow run's prompt parameter, or a raw graph's positive encoders."""
from __future__ import annotations

import json

import pytest

from comfyart.comfy.texts import MAX_CHARS, clip, graph_text, prompt_text
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.paths import ROOT


def encoder(text: object, cls: str = "CLIPTextEncode", **more: object) -> dict:
    return {"class_type": cls, "inputs": {"text": text, "clip": ["4", 1], **more}}


def sampler(positive: str, negative: str) -> dict:
    return {"class_type": "KSampler", "inputs": {"positive": [positive, 0], "negative": [negative, 0], "seed": 1}}


def test_the_positive_encoder_is_the_prompt_and_the_negative_is_left_out():
    graph = {"3": sampler("6", "7"), "6": encoder("a red barn"), "7": encoder("blurry")}
    assert graph_text(graph) == "a red barn"
    # ids are not in the order the wires run: the sampler decides which one is positive
    assert graph_text({"3": sampler("7", "6"), "6": encoder("blurry"), "7": encoder("a red barn")}) == "a red barn"


def test_without_a_sampler_every_encoder_counts_in_node_order_each_text_once():
    graph = {"10": encoder("third"), "2": encoder("first"), "9": encoder("second"), "11": encoder("first")}
    assert graph_text(graph) == "first / second / third"


def test_the_encoders_of_sdxl_and_flux_and_a_text_node_feeding_an_encoder():
    sdxl = {"1": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a castle", "text_l": "a castle",
                                                                  "width": 1024}}}
    assert graph_text(sdxl) == "a castle"
    flux = {"1": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip_l": "fog", "t5xxl": "a foggy pier"}}}
    assert graph_text(flux) == "fog / a foggy pier"
    fed = {"1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "  a fox in snow "}},
           "2": encoder(["1", 0]), "3": sampler("2", "2")}
    assert graph_text(fed) == "a fox in snow"
    assert graph_text({"2": encoder(["99", 0])}) is None  # a dangling link: nothing to read


@pytest.mark.parametrize("graph", [
    {}, basic_graph(), {"1": encoder("")}, {"1": encoder("   ")}, {"1": encoder(42)}, {"1": "not a node"},
    {"1": {"class_type": "CLIPTextEncode"}}, {"1": {"class_type": "CLIPTextEncode", "inputs": []}},
    {"1": {"class_type": "KSampler", "inputs": {"positive": "6"}}},
])
def test_a_graph_without_prompt_text_has_none(graph: dict):
    assert graph_text(graph) is None


def test_a_workflow_run_shows_its_prompt_parameter_before_the_graph():
    graph = text_to_image_graph()
    assert prompt_text({"prompt": "a lighthouse", "steps": 4}, graph) == "a lighthouse"
    assert prompt_text({"positive": "a boat"}, None) == "a boat"
    assert prompt_text({"steps": 4}, None) is None  # queued by name, not dispatched yet, no prompt parameter
    assert prompt_text({"prompt": "  "}, {"6": encoder("from the graph")}) == "from the graph"
    assert prompt_text({"prompt": ["not", "text"]}, None) is None
    assert prompt_text(None, None) is None


def test_the_shipped_workflows_graphs_read_as_their_positive_prompt():
    for name, expected in (("text-to-image", "a lighthouse on a cliff at dawn"),
                           ("image-to-image", "the same scene as an oil painting")):
        graph = json.loads((ROOT / "config" / "workflows" / f"{name}-api.json").read_text())
        assert graph_text(graph) == expected


def test_long_and_multi_line_text_is_one_line_and_capped():
    assert clip("a\n  b\tc") == "a b c"
    long = "word " * 200
    clipped = clip(long)
    assert len(clipped) == MAX_CHARS and clipped.endswith("…") and clipped.startswith("word word")
    assert clip("x" * MAX_CHARS) == "x" * MAX_CHARS
