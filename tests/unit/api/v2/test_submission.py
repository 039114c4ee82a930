"""The body of POST /api/v2/jobs read or refused (api.v2.submission): each refusal's code and status."""
from __future__ import annotations

import pytest

from comfyart.api.v2.errors import ERROR_STATUS
from comfyart.api.v2.submission import Refusal, Submission, is_ui_format, read_submission
from tests.support.graphs import basic_graph

GRAPH = basic_graph()


@pytest.mark.parametrize("body, code, status, words", [
    ([1], "invalid_request", None, "body must be a JSON object"),
    ({}, "invalid_workflow", None, "workflow is missing"),
    ({"workflow": [1]}, "invalid_workflow", None, "workflow is not an object"),
    ({"workflow": {}}, "invalid_workflow", None, "has no nodes"),
    ({"workflow": {"1": {"inputs": {}}}}, "invalid_workflow", None, "node '1' has no class_type"),
    ({"workflow": {"nodes": [], "links": []}}, "workflow_format_ui", None, "API format"),
    ({"workflow": GRAPH, "webhook_url": "http://x"}, "invalid_request", 422, "reserved"),
    ({"workflow": GRAPH, "urgency": 1}, "invalid_request", 422, "unknown field(s): urgency"),
    ({"workflow": GRAPH, "extra_data": []}, "invalid_request", None, "extra_data must be an object"),
    ({"workflow": GRAPH, "extra_data": {"client_id": "x"}}, "invalid_request", None, "unknown: client_id"),
    ({"workflow": GRAPH, "extra_data": {"api_key_comfy_org": 1}}, "invalid_request", None, "must be a string"),
    ({"workflow": GRAPH, "priority": 1000}, "invalid_request", 422, "priority: must be"),
    ({"workflow": GRAPH, "metadata": {"a b": "x"}}, "metadata_invalid", None, "label key"),
])
def test_refusals(body, code, status, words):
    refusal = read_submission(body, max_nodes=100)
    assert isinstance(refusal, Refusal) and refusal.code == code and refusal.status == status
    assert code in ERROR_STATUS and words in refusal.message and "\n" not in refusal.message


def test_a_good_body_and_what_is_not_kept():
    read = read_submission({"workflow": GRAPH, "extra_data": {"api_key_comfy_org": "secret"}, "priority": "high",
                            "metadata": {}}, max_nodes=100)
    assert read == Submission(GRAPH, 1, {})
    assert read_submission({"workflow": GRAPH, "priority": None}, max_nodes=100) == Submission(GRAPH)
    labelled = read_submission({"workflow": GRAPH, "metadata": {"team": "x", "run.id": "7"}}, max_nodes=100)
    assert labelled == Submission(GRAPH, 0, {"team": "x", "run.id": "7"})
    too_big = read_submission({"workflow": GRAPH}, max_nodes=1)
    assert isinstance(too_big, Refusal) and too_big.code == "invalid_workflow"


@pytest.mark.parametrize("workflow, ui", [
    ({"nodes": [], "links": []}, True), ({"nodes": [], "links": [], "last_node_id": 3}, True),
    ({"nodes": {}, "links": []}, False), ({"nodes": []}, False), (GRAPH, False),
])
def test_ui_format(workflow, ui):
    assert is_ui_format(workflow) is ui
