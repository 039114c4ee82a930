"""Request bodies into typed values (api.requests): one-line refusals naming the field, typed values, changes,
inlined schemas. Pure, no server."""
from __future__ import annotations

import json
from typing import Any

import pytest

from comfyart.api.requests import (
    BackendRegistration,
    KeyCreation,
    RequestBody,
    RunOptions,
    ScaleChange,
    SchedulerChange,
    TaskSubmission,
    schema_of,
)
from comfyart.config.sections import LimitsConfig, SchedulerConfig
from comfyart.errors import InvalidInput
from comfyart.workflows.definition import WorkflowDefinition
from tests.support.graphs import ONE_NODE_GRAPH


@pytest.mark.parametrize("model, body, message", [
    pytest.param(TaskSubmission, [1], "body must be a JSON object with a 'prompt' field", id="not-an-object"),
    pytest.param(TaskSubmission, {"prompt": ONE_NODE_GRAPH, "urgency": 1, "colour": 2},
                 "unknown field(s): colour, urgency", id="unknown-first"),
    pytest.param(TaskSubmission, {"prompt": ONE_NODE_GRAPH, "priority": True}, "priority: must be high, normal, low",
                 id="priority-bool"),
    pytest.param(TaskSubmission, {"prompt": ONE_NODE_GRAPH, "vram_mb": 2.0}, "vram_mb: a whole number of MiB from 1",
                 id="vram-float"),
    pytest.param(TaskSubmission, {"prompt": ONE_NODE_GRAPH, "webhook": "ftp://x"},
                 "webhook: an http(s) URL with a host", id="webhook-scheme"),
    pytest.param(TaskSubmission, {"prompt": None}, "prompt must be a JSON object mapping node ids to nodes",
                 id="prompt-null"),
    pytest.param(TaskSubmission, {"workflow": None}, "workflow must be a workflow's name", id="workflow-null"),
    pytest.param(TaskSubmission, {"prompt": {"1": {"class_type": "A"}, "2": {}}}, "node '2' has no class_type",
                 id="graph"),
    pytest.param(RunOptions, {"params": "x"}, "params must be a JSON object mapping parameter names to values",
                 id="params"),
    pytest.param(ScaleChange, {"target": True}, "target must be a whole number >= 0, or null", id="scale-bool"),
    pytest.param(BackendRegistration, {"name": "-x", "url": "http://h"}, "name: 1-64 letters", id="backend-name"),
    pytest.param(BackendRegistration, {"name": "x", "url": "h"}, "url: must start with http:// or https://",
                 id="backend-url"),
    pytest.param(KeyCreation, {"name": "x", "submissions_per_minute": "1"}, "submissions_per_minute: a number",
                 id="key-rate"),
    pytest.param(SchedulerChange, {"order": "random"}, "order: Input should be 'fifo' or 'longest_first'",
                 id="scheduler-order"),
])
def test_a_bad_body_is_refused_in_one_line_naming_the_field(model: type[RequestBody], body: Any, message: str):
    with pytest.raises(InvalidInput) as refused:
        model.of(body)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_every_error_of_a_body_is_named():
    with pytest.raises(InvalidInput) as refused:
        TaskSubmission.of({"prompt": {}, "priority": "urgent", "vram_mb": 0})
    assert str(refused.value).split("; ") == [  # the scheduling fields first, as before the models
        "priority: must be high, normal, low or a whole number from -100 to 100",
        "vram_mb: a whole number of MiB from 1", "prompt has no nodes"]


def test_a_graph_is_held_to_the_configured_limit():
    graph = {str(i): {"class_type": "A"} for i in range(3)}
    assert TaskSubmission.of({"prompt": graph}).prompt == graph
    with pytest.raises(InvalidInput, match="prompt has 3 nodes; at most 2 are allowed"):
        TaskSubmission.of({"prompt": graph}, LimitsConfig(max_graph_nodes=2))


def test_values_come_out_typed():
    body = TaskSubmission.of({"workflow": "w", "priority": "HIGH", "requires": ["gpu:a100"], "params": None})
    assert (body.workflow, body.priority, body.requires, body.params) == ("w", 1, ["gpu:a100"], {})
    key = KeyCreation.of({"name": "bob@example", "submissions_per_minute": 6})
    assert key.role.value == "client" and type(key.submissions_per_minute) is int  # kept as given in the record


def test_changes_hold_what_was_given_and_null_resets():
    assert ScaleChange.of({"target": None, "max_containers": 3}).changes() == {"target": None, "max_containers": 3}
    assert SchedulerChange.of({"strategy": "affinity", "prefetch": None}).changes() == {"strategy": "affinity",
                                                                                        "prefetch": None}


def test_the_scheduler_change_names_every_setting_of_the_configuration():
    assert set(SchedulerChange.model_fields) == set(SchedulerConfig.model_fields)


def test_a_documented_body_points_nowhere_outside_itself():
    schema = json.dumps(schema_of(WorkflowDefinition))
    assert "$ref" not in schema and "$defs" not in schema and '"target"' in schema
