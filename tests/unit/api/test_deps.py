"""The admission of a new task (api.deps.Admission): what it adds to the request."""
from __future__ import annotations

from comfyart.api.deps import Admission
from comfyart.api.requests import (
    TaskSubmission,
)
from tests.support.graphs import ONE_NODE_GRAPH


def test_a_new_task_carries_its_admission():
    options = TaskSubmission.of({"prompt": ONE_NODE_GRAPH, "priority": 5, "webhook": "https://example.com/hook"})
    new = Admission(owner="k1", webhook_public_only=True, max_queued=2).new_task(options, prompt=options.prompt)
    assert (new.owner, new.webhook_public_only, new.priority, new.webhook, new.prompt) == (
        "k1", True, 5, "https://example.com/hook", ONE_NODE_GRAPH)
    assert new.requires == () and new.vram_mb is None and new.workflow is None
