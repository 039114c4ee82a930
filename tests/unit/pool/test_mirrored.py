"""The pool snapshot a leader publishes and a standby applies (``pool.mirrored``), and when the publisher writes one
(``pool.mirror``): pure, no Redis."""
from __future__ import annotations

import json
from typing import Any

import pytest

from comfyart.config.fleet import PoolConfig
from comfyart.models import BackendMode, BackendState
from comfyart.policy.inventory import UNLISTED, Inventory
from comfyart.policy.needs import Needs
from comfyart.pool.backend import AfterDrain, Backend
from comfyart.pool.mirror import DESCRIBE_EVERY_S, _worth_publishing
from comfyart.pool.mirrored import FORMAT, apply_backends, digests, mirrored_of, snapshot
from comfyart.pool.registry import Pool

SD = Inventory("sha-sd", frozenset({"KSampler", "SaveImage"}), {})
FLUX = Inventory("sha-flux", frozenset({"KSampler", "FluxGuidance"}), {})


def empty_pool() -> Pool:
    return Pool(config=PoolConfig(), providers=[], connect=lambda url: None)


def leader_pool() -> Pool:
    pool = empty_pool()
    a = Backend("static:a", "static", "static", "http://user:secret@127.0.0.1:1", None, name="a",
                state=BackendState.HEALTHY, tags=frozenset({"sd"}), weight=2.0, inventory=SD, vram_total=8 << 30)
    a.prompts.update({"p1": "t1", "p2": "t2"})
    b = Backend("docker:h1:8189", "docker", "h1", "http://127.0.0.1:2", None, port=8189, gpu=0,
                state=BackendState.STARTING, inventory=UNLISTED)
    c = Backend("static:c", "static", "static", "http://127.0.0.1:3", None, name="c", state=BackendState.UNHEALTHY)
    for backend in (a, b, c):
        pool.backends[backend.id] = backend
    c.drain(AfterDrain.HOLD, "by hand")
    pool.host_inventories[("docker", "h1")] = FLUX
    return pool


def published(pool: Pool) -> dict[str, Any]:
    """The snapshot as it crosses Redis: JSON."""
    return json.loads(json.dumps(snapshot(pool, {"strategy": "fifo", "lookahead": 3})))


def fields(pool: Pool) -> dict[str, tuple[Any, ...]]:
    return {b.id: (b.kind, b.host, b.url, b.port, b.gpu, b.name, b.state, b.mode, b.tags, b.weight, dict(b.prompts),
                   b.vram_total, b.inventory) for b in pool.backends.values()}


def test_a_standby_pool_holds_the_leaders_backends_and_answers_its_descriptions():
    leader, standby = leader_pool(), empty_pool()
    snap = published(leader)
    assert snap["format"] == FORMAT and digests(snap) == {"sha-sd", "sha-flux"}
    assert apply_backends(standby, snap, {"sha-sd": SD, "sha-flux": FLUX}) is True
    assert fields(standby) == fields(leader)
    assert standby.host_inventories == {("docker", "h1"): FLUX}
    needs = Needs(nodes=frozenset({"SaveImage"}))
    assert standby.could_run(needs) == leader.could_run(needs) == {"static:a", "docker:h1:8189"}
    standby.mirrored = mirrored_of("5:1", 5, 123, snap)
    assert standby.describe() == json.loads(json.dumps(leader.describe()))
    assert standby.describe()["backends"][0]["url"] == "http://user:***@127.0.0.1:1"  # as the leader shows it
    assert standby.describe_decision() is None and standby.mirrored.scheduler["lookahead"] == 3
    standby.describe()["backends"].clear()  # a caller's changes stay its own
    assert len(standby.describe()["backends"]) == 3
    standby.reset()  # a term starts here: the pool is its own again
    assert standby.mirrored is None and standby.describe()["backends"] == []


def test_the_same_snapshot_again_changes_nothing_and_keeps_the_objects():
    leader, standby = leader_pool(), empty_pool()
    apply_backends(standby, published(leader), {"sha-sd": SD, "sha-flux": FLUX})
    objects, generation = dict(standby.backends), standby.generation
    assert apply_backends(standby, published(leader), {"sha-sd": SD, "sha-flux": FLUX}) is False
    assert standby.generation == generation
    assert all(standby.backends[i] is objects[i] for i in objects)


@pytest.mark.parametrize("change", ["state", "mode", "tags", "inventory", "load", "url", "gone", "host"])
def test_a_change_on_the_leader_reaches_the_standby(change: str):
    leader, standby = leader_pool(), empty_pool()
    apply_backends(standby, published(leader), {"sha-sd": SD, "sha-flux": FLUX})
    before, generation = standby.backends["static:a"], standby.generation
    a = leader.backends["static:a"]
    if change == "state":
        a.move_to(BackendState.UNHEALTHY)
    elif change == "mode":
        a.disable()
    elif change == "tags":
        a.tags = frozenset({"flux"})
    elif change == "inventory":
        a.inventory = FLUX
    elif change == "load":
        a.prompts.pop("p1")
    elif change == "url":
        leader.backends["static:a"] = Backend("static:a", "static", "static", "http://127.0.0.1:9", None,
                                              name="a", state=BackendState.HEALTHY)
    elif change == "gone":
        leader.backends.pop("static:a")
    else:
        leader.host_inventories.clear()
    changed = apply_backends(standby, published(leader), {"sha-sd": SD, "sha-flux": FLUX})
    assert fields(standby) == fields(leader) and standby.host_inventories == leader.host_inventories
    # what the pool works out from its backends is worked out again, except after a change of load alone
    assert changed is (change != "load") and (standby.generation > generation) is (change != "load")
    if change in ("state", "mode", "tags", "inventory", "load"):
        assert standby.backends["static:a"] is before  # set in place: no transition run, no new client
    if change == "mode":
        assert standby.backends["static:a"].mode is BackendMode.DISABLED


def test_a_document_the_standby_lacks_leaves_its_backend_without_an_inventory_for_now():
    standby = empty_pool()
    apply_backends(standby, published(leader_pool()), {"sha-flux": FLUX})
    assert standby.backends["static:a"].inventory is None
    assert standby.backends["docker:h1:8189"].inventory is UNLISTED  # the marker needs no document
    assert apply_backends(standby, published(leader_pool()), {"sha-sd": SD, "sha-flux": FLUX}) is True
    assert standby.backends["static:a"].inventory is SD


def test_when_the_publisher_writes():
    snap = published(leader_pool())
    assert _worth_publishing(None, snap, 0.0)
    assert not _worth_publishing(snap, snap, 10.0)
    for part, value in (("backends", []), ("hosts", []), ("scheduler", {}), ("decision", {"desired": 1})):
        assert _worth_publishing(snap, {**snap, part: value}, 0.0), part
    older = {**snap, "describe": {**snap["describe"], "counters": {"started": 9}}}
    assert not _worth_publishing(older, snap, DESCRIBE_EVERY_S / 2)  # durations alone: once a second
    assert _worth_publishing(older, snap, DESCRIBE_EVERY_S)
