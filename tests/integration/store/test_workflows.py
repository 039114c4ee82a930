"""Workflows in a real Redis (store.workflows): versions, conditional writes, deletes that keep what queued tasks
need."""
from __future__ import annotations

from dataclasses import astuple

import pytest

from comfyart.errors import Conflict, NotFound
from comfyart.store.workflows import DELETED_RETENTION_S
from tests.support.workflows import t2i


async def test_versions_are_kept_and_identical_content_adds_none(workflows):
    assert astuple(await workflows.put("t2i", t2i()))[:2] == (1, True)
    assert astuple(await workflows.put("t2i", t2i()))[:2] == (1, False)  # same content: same version
    assert astuple(await workflows.put("t2i", t2i(steps=8)))[:2] == (2, True)
    current = await workflows.get("t2i")
    assert current.version == 2 and current.graph["3"]["inputs"]["steps"] == 8 and current.source == "api"
    first = await workflows.get("t2i", 1)
    assert first.graph["3"]["inputs"]["steps"] == 4
    assert first.source == "api" and first.created_ms <= first.updated_ms <= current.updated_ms  # its own times
    assert await workflows.versions("t2i") == [1, 2]
    assert current.created_ms <= current.updated_ms
    [listed] = await workflows.summaries()
    assert listed["name"] == "t2i" and listed["version"] == 2 and set(listed["params"]) == {"seed", "prompt"}
    assert listed["params"]["seed"]["target"] == [{"node": "3", "input": "seed"}]


async def test_conditional_writes(workflows):
    with pytest.raises(Conflict, match="at version 0, not 3"):
        await workflows.put("t2i", t2i(), expected_version=3)
    assert astuple(await workflows.put("t2i", t2i(), expected_version=0))[:2] == (1, True)
    with pytest.raises(Conflict, match="at version 1, not 0"):
        await workflows.put("t2i", t2i(steps=5), expected_version=0)
    assert astuple(await workflows.put("t2i", t2i(steps=5), expected_version=1))[:2] == (2, True)
    with pytest.raises(Conflict):
        await workflows.put("t2i", t2i(steps=6), expected_version=1)
    assert (await workflows.get("t2i")).version == 2


async def test_delete_keeps_versions_for_queued_tasks_and_never_reuses_a_number(workflows, redis_client):
    await workflows.put("t2i", t2i())
    await workflows.put("t2i", t2i(steps=8))
    await workflows.delete("t2i")
    with pytest.raises(NotFound, match="no workflow t2i"):
        await workflows.get("t2i")
    with pytest.raises(NotFound):
        await workflows.delete("t2i")
    assert await workflows.summaries() == []
    # what tasks queued before the delete need stays readable, for a while
    assert (await workflows.definition("t2i", 1)).graph["3"]["inputs"]["steps"] == 4
    assert 0 < await redis_client.ttl("t:workflow-versions:t2i") <= DELETED_RETENTION_S
    assert astuple(await workflows.put("t2i", t2i(steps=9)))[:2] == (3, True)
    assert await redis_client.ttl("t:workflow-versions:t2i") == -1  # alive again: no expiry
    assert await workflows.versions("t2i") == [1, 2, 3]
