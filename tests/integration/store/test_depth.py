"""The unfinished tasks by the tags they require (store.depth) on a real redis-server: the queue's head, the claims,
the active set (submitted or running), tags from a task's needs before its own, the queue beyond the scan."""
from __future__ import annotations

from comfyart.models import NewTask, TaskStatus
from comfyart.policy.needs import Needs, needs_record
from comfyart.store.depth import NO_TAGS, TagDepth
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from tests.support.graphs import STORED_GRAPH


async def test_depth_by_tags_and_state(store: TaskStore, queue: TaskQueue):
    depth = TagDepth(queue)
    assert (await depth.read(100)).counts == {}
    plain = [await store.create(NewTask(STORED_GRAPH)) for _ in range(3)]
    for _ in range(2):
        await store.create(NewTask(STORED_GRAPH, requires=["sdxl", "gpu"]))
    # a task whose needs (its workflow's tags with its own, worked out at submission) say more than its requires;
    # a combo value that spells "tags":[ inside a string is escaped in the JSON, and never read as the key
    needs = Needs(frozenset({"gpu", "sdxl", "xl:large"}), 8 << 30, frozenset({"m.safetensors"}),
                  frozenset({"KSampler"}), frozenset({("Note", "text", '"tags":["fake"]')}))
    await store.create(NewTask(STORED_GRAPH, requires=["gpu"], needs=needs_record(needs, 2.5)))
    read = await depth.read(100)
    assert read.counts == {(NO_TAGS, "queued"): 3, ("gpu,sdxl", "queued"): 2, ("gpu,sdxl,xl:large", "queued"): 1}
    assert read.beyond_scan == 0

    # claimed: still queued; submitted: on a backend, not started; running
    assert await queue.claim_id(plain[0].id, 30) and await queue.claim_id(plain[1].id, 30)
    await queue.record_submission(plain[1].id, backend="b1", prompt_id="p1", attempts=1)
    assert await queue.claim_id(plain[2].id, 30)
    await queue.record_submission(plain[2].id, backend="b1", prompt_id="p2", attempts=1)
    await store.update(plain[2].id, to=TaskStatus.RUNNING, started_ms=1)
    read = await depth.read(100)
    assert read.counts == {(NO_TAGS, "queued"): 1, (NO_TAGS, "submitted"): 1, (NO_TAGS, "running"): 1,
                           ("gpu,sdxl", "queued"): 2, ("gpu,sdxl,xl:large", "queued"): 1}

    # a final task leaves every count
    await store.update(plain[2].id, to=TaskStatus.COMPLETED, finished_ms=2)
    assert (NO_TAGS, "running") not in (await depth.read(100)).counts


async def test_the_queue_beyond_the_scan_is_counted_apart(store: TaskStore, queue: TaskQueue):
    for _ in range(5):
        await store.create(NewTask(STORED_GRAPH))
    read = await TagDepth(queue).read(2)
    assert read.counts == {(NO_TAGS, "queued"): 2} and read.beyond_scan == 3
