"""The pool's views for the dispatcher: the slots of the backends with room, and which backends could ever run a
task, kept until the pool's generation says a backend joined, left or changed."""
from __future__ import annotations

from typing import Any

import pytest

from comfyart.config.fleet import PoolConfig
from comfyart.models import BackendState
from comfyart.policy.needs import Needs
from comfyart.pool.backend import AfterDrain, Backend
from comfyart.pool.registry import Pool

GIB = 1 << 30


def pool_of(*backends: Backend) -> Pool:
    pool = Pool(config=PoolConfig(), providers=[], connect=lambda url: None)
    for backend in backends:
        pool.backends[backend.id] = backend
    return pool


def backend(backend_id: str, *, prompts: int = 0, state: BackendState = BackendState.HEALTHY,
            **fields: Any) -> Backend:
    made = Backend(backend_id, "static", "static", f"http://127.0.0.1:1/{backend_id}", None,
                   state=state, **fields)
    made.prompts.update({f"{backend_id}-p{i}": f"t{i}" for i in range(prompts)})
    return made


def test_open_slots_are_the_usable_backends_with_room():
    pool = pool_of(backend("a"), backend("b", prompts=1), backend("c", prompts=2),
                   backend("d", state=BackendState.UNHEALTHY), backend("e", task_limit=1, tasks_done=1))
    pool.backends["f"] = backend("f")
    pool.backends["f"].disable()
    assert [s.id for s in pool.open_slots(2)] == ["a", "b"]
    assert [s.id for s in pool.open_slots(1)] == ["a"]
    assert [(s.id, s.inflight) for s in pool.open_slots(3)] == [("a", 0), ("b", 1), ("c", 2)]
    assert [pool.usable(b) for b in "abcdefz"] == [True, True, True, False, False, False, False]


def test_a_full_backend_is_looked_at_again_only_once_one_of_its_prompts_ends():
    from comfyart.tracker.prompts import PromptBook
    pool = pool_of(backend("a"), backend("b"), backend("c"))
    book = PromptBook()
    assert [s.id for s in pool.open_slots(1)] == ["a", "b", "c"]
    book.open(pool.backends["b"], "p1", "t1", {})
    assert [s.id for s in pool.open_slots(1)] == ["a", "c"]
    assert "b" not in pool._roomy  # left out of the next rounds: a round looks at the backends with room only
    book.close(pool.backends["b"], "p1", done=True)
    assert [s.id for s in pool.open_slots(1)] == ["a", "b", "c"]  # back, in pool order
    book.open(pool.backends["a"], "p2", "t2", {})
    assert [s.id for s in pool.open_slots(1)] == ["b", "c"]
    assert [s.id for s in pool.open_slots(2)] == ["a", "b", "c"]  # more slots each: every backend looked at again
    book.drop(pool.backends["a"], "p2")
    pool.backends["c"].disable()
    assert [s.id for s in pool.open_slots(2)] == ["a", "b"]
    pool.backends["c"].activate()  # a change of mode: the generation changed
    assert [s.id for s in pool.open_slots(2)] == ["a", "b", "c"]


@pytest.mark.parametrize("change", [
    lambda pool: pool.backends.__setitem__("z", backend("z")),
    lambda pool: pool.backends.__setitem__("a", backend("a")),  # replaced: a new backend under the same id
    lambda pool: pool.backends.pop("a"),
    lambda pool: pool.backends.__delitem__("a"),
    lambda pool: pool.backends.clear(),
    lambda pool: pool.backends["a"].move_to(BackendState.UNHEALTHY),
    lambda pool: pool.backends["a"].drain(AfterDrain.HOLD, "by hand"),
    lambda pool: pool.backends["a"].disable(),
    lambda pool: pool.backends["a"].record_stats({"devices": [{"vram_total": 48 * GIB, "vram_free": GIB}]}),
    lambda pool: pool.bump_generation(),  # tags changed, or (later) an inventory
])
def test_the_generation_goes_up_when_a_backend_joins_leaves_or_changes(change):
    pool = pool_of(backend("a", vram_total=24 * GIB), backend("b"))
    before = pool.generation
    change(pool)
    assert pool.generation > before


@pytest.mark.parametrize("same", [
    lambda pool: pool.backends.pop("nobody", None),
    lambda pool: pool.backends["a"].move_to(BackendState.HEALTHY),  # healthy already
    lambda pool: pool.backends["a"].activate(),  # active already
    lambda pool: pool.backends["a"].record_stats({"devices": [{"vram_total": 24 * GIB, "vram_free": 3 * GIB}]}),
    lambda pool: pool.backends["a"].prompts.update({"p": "t"}),  # its load: read live, every round
])
def test_the_generation_stays_when_nothing_it_covers_changed(same):
    pool = pool_of(backend("a", vram_total=24 * GIB), backend("b"))
    before = pool.generation
    same(pool)
    assert pool.generation == before


def test_could_run_is_kept_until_the_generation_changes():
    pool = pool_of(backend("a", tags=frozenset({"video"})), backend("b", state=BackendState.UNHEALTHY,
                                                                     tags=frozenset({"video"})), backend("c"))
    video = Needs(frozenset({"video"}))
    assert pool.could_run(video) == {"a", "b"}  # whatever their state: usable() tells that
    assert pool.could_run(Needs()) == {"a", "b", "c"}
    pool.backends["c"].tags = frozenset({"video"})
    assert pool.could_run(video) == {"a", "b"}  # kept: nobody said
    pool.bump_generation()
    assert pool.could_run(video) == {"a", "b", "c"}
    del pool.backends["a"]
    assert pool.could_run(video) == {"b", "c"}
    fleet = pool.view()
    assert fleet.could_run(video) == {"b", "c"} and not fleet.usable("b") and fleet.usable("c")
