"""The scheduling decisions (policy.scheduling): what fits where, ``assign`` under every strategy by table and by
invariants checked over many generated pools and queues, the window, and the order of a window."""
import random

import pytest

from comfyart.policy.needs import Needs
from comfyart.policy.scheduling import (
    BackendSlot,
    Order,
    PoolView,
    QueuedTask,
    Strategy,
    assign,
    cannot_run_reason,
    could_run,
    free_prompt_slots,
    level_at,
    ordered,
    skipped_by,
    unschedulable_reason,
    window_size,
)

GIB = 1 << 30


def slot(id, inflight=0, **kw):
    return BackendSlot(id, inflight, **kw)


def task(id, priority=0, models=(), tags=(), vram=None, avoid=(), skips=0):
    return QueuedTask(id, priority, Needs(frozenset(tags), vram, frozenset(models)), frozenset(avoid), skips)


def run(window, backends, strategy=Strategy.LEAST_BUSY, prefetch=0, waiting=None, **kw):
    return assign(window, backends, strategy=strategy, prefetch=prefetch,
                  waiting=len(window) if waiting is None else waiting, **kw)


# ---------------------------------------------------------------------------------------------------- fit
@pytest.mark.parametrize("needs, backend, reason", [
    (Needs(), slot("a"), None),
    (Needs(frozenset({"video"})), slot("a", tags=frozenset({"video", "sdxl"})), None),
    (Needs(frozenset({"video", "gpu:a100"})), slot("a", tags=frozenset({"video"})), "lacks tag(s) gpu:a100"),
    (Needs(vram=8 * GIB), slot("a", vram_total=24 * GIB, vram_free=1 * GIB), None),  # ComfyUI unloads to fit
    (Needs(vram=48 * GIB), slot("a", vram_total=24 * GIB), "has 24576 MiB of VRAM, the task needs 49152 MiB"),
    (Needs(vram=GIB), slot("a"), "reports no VRAM figures"),
])
def test_cannot_run_reason(needs, backend, reason):
    assert cannot_run_reason(needs, backend) == reason


def test_unschedulable_reason_counts_why():
    backends = [slot("a", tags=frozenset({"sdxl"})), slot("b"), slot("c", tags=frozenset({"video"}))]
    assert unschedulable_reason(Needs(frozenset({"video"})), backends) is None
    assert unschedulable_reason(Needs(frozenset({"flux"})), backends) == "3 backend(s) lacks tag(s) flux"
    assert unschedulable_reason(Needs(), []) == "no backends"


# ---------------------------------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("backends, expected", [
    pytest.param([slot("a", 1), slot("b", 0)], "b", id="fewest in flight"),
    pytest.param([slot("a", 0, healthy=False), slot("b", 1)], None, id="unhealthy skipped, b full"),
    pytest.param([slot("a", 0, vram_free=10), slot("b", 0, vram_free=20)], "b", id="tie: most free vram"),
    pytest.param([slot("a", 0, last_used=9), slot("b", 0, last_used=3)], "b", id="tie: least recently used"),
    pytest.param([slot("a", 0), slot("b", 0)], "a", id="tie: first listed"),
    pytest.param([slot("a", 0, accepting=False), slot("b", 0)], "b", id="not accepting skipped"),
    pytest.param([], None, id="empty pool"),
])
def test_least_busy(backends, expected):
    pairs = run([task("t")], backends)
    assert pairs == ([("t", expected)] if expected else [])


def test_round_robin_cycles_whatever_the_load():
    backends = [slot("a", 0), slot("b", 0), slot("c", 0)]
    pairs = run([task(f"t{i}") for i in range(6)], backends, Strategy.ROUND_ROBIN, prefetch=1, waiting=100)
    assert [b for _, b in pairs] == ["a", "b", "c", "a", "b", "c"]


def test_weighted_spreads_by_weight():
    backends = [slot("big", 0, weight=3.0), slot("small", 0, weight=1.0)]
    pairs = run([task(f"t{i}") for i in range(4)], backends, Strategy.WEIGHTED, prefetch=3, waiting=100)
    assert sorted(b for _, b in pairs) == ["big", "big", "big", "small"]


@pytest.mark.parametrize("backends, avoid, expected", [
    pytest.param([slot("a"), slot("b")], {"a"}, "b", id="avoids where it failed"),
    pytest.param([slot("a"), slot("b", 1)], {"a"}, "a", id="falls back when the others are full"),
    pytest.param([slot("a"), slot("b", healthy=False)], {"a"}, "a", id="falls back when the others are sick"),
    pytest.param([slot("a"), slot("b"), slot("c")], {"a", "b"}, "c", id="several avoided"),
    pytest.param([slot("a", 1), slot("b")], {"b"}, "b", id="an avoided one with the only free slot"),
    pytest.param([slot("a", accepting=False), slot("b")], {"b"}, "b", id="a draining one is no alternative"),
])
@pytest.mark.parametrize("strategy", list(Strategy))
def test_avoids_backends_where_the_task_failed(backends, avoid, expected, strategy):
    assert run([task("t", avoid=avoid)], backends, strategy) == [("t", expected)]


def test_avoid_is_a_last_resort():
    backends = [slot("a", 0), slot("b", 1)]
    assert run([task("t", avoid={"a"})], backends, prefetch=1, waiting=5) == [("t", "b")]
    assert run([task("t", avoid={"a"})], [slot("a", 0)]) == [("t", "a")]


def test_required_tags_route_and_never_block_the_queue():
    backends = [slot("plain", 0), slot("vid", 1, tags=frozenset({"video"}))]
    window = [task("needs-video", tags={"video"}), task("any")]
    # the video backend is full: the first task waits, the second runs instead of queueing behind it
    assert run(window, backends) == [("any", "plain")]
    assert run(window, [slot("plain", 0), slot("vid", 0, tags=frozenset({"video"}))]) == \
        [("needs-video", "vid"), ("any", "plain")]


def test_vram_requirement_skips_small_backends():
    backends = [slot("small", 0, vram_total=8 * GIB, vram_free=8 * GIB), slot("big", 1, vram_total=80 * GIB)]
    assert run([task("t", vram=40 * GIB)], backends) == []
    assert run([task("t", vram=40 * GIB)], backends, prefetch=1) == [("t", "big")]


def test_prefetch_only_while_the_queue_is_deep():
    backends = [slot("a", 1), slot("b", 1), slot("c", 0)]
    # three backends, two tasks waiting: the second waits for an idle backend instead of queueing behind one
    assert run([task("t1"), task("t2")], backends, prefetch=1, waiting=2) == [("t1", "c")]
    assert run([task("t1"), task("t2")], backends, prefetch=1, waiting=3) == [("t1", "c")]
    assert run([task("t1"), task("t2")], backends, prefetch=1, waiting=4) == [("t1", "c"), ("t2", "a")]
    assert run([task("t1")], [slot("a", 1)], prefetch=1, waiting=1) == [("t1", "a")]  # one backend: always


# ---------------------------------------------------------------------------------------------------- affinity
def test_affinity_prefers_the_backend_with_the_models_loaded():
    backends = [slot("a", 0, models=frozenset({"x"})), slot("b", 0, models=frozenset({"y"}))]
    assert run([task("t", models={"y"})], backends, Strategy.AFFINITY) == [("t", "b")]
    assert run([task("t", models={"y"})], backends, Strategy.LEAST_BUSY) == [("t", "a")]


def test_affinity_runs_a_later_matching_task_on_a_busy_backend():
    backends = [slot("a", 1, models=frozenset({"x"})), slot("b", 1, models=frozenset({"y"}))]
    window = [task("t1", models={"z"}), task("t2", models={"y"})]
    pairs = run(window, backends, Strategy.AFFINITY, prefetch=1, waiting=10)
    assert pairs[0] == ("t2", "b")
    assert skipped_by(window, pairs[:1]) == ["t1"]


def test_affinity_never_leaves_a_backend_idle():
    # b is idle with other models loaded: the matching busy backend a does not take the task instead
    backends = [slot("a", 1, models=frozenset({"x"})), slot("b", 0, models=frozenset({"y"}))]
    assert run([task("t", models={"x"})], backends, Strategy.AFFINITY, prefetch=1, waiting=10) == [("t", "b")]


def test_affinity_gives_way_to_a_task_skipped_too_often():
    backends = [slot("b", 1, models=frozenset({"y"}))]
    window = [task("t1", models={"z"}, skips=16), task("t2", models={"y"})]
    assert run(window, backends, Strategy.AFFINITY, prefetch=1, waiting=10)[0] == ("t1", "b")
    window = [task("t1", models={"z"}, skips=15), task("t2", models={"y"})]  # one skip short of the default bound
    assert run(window, backends, Strategy.AFFINITY, prefetch=1, waiting=10)[0] == ("t2", "b")
    assert run(window, backends, Strategy.AFFINITY, prefetch=1, waiting=10, affinity_max_skips=8)[0] == ("t1", "b")


def test_affinity_never_overtakes_a_higher_level():
    backends = [slot("b", 1, models=frozenset({"y"}))]
    window = [task("t1", priority=1, models={"z"}), task("t2", priority=0, models={"y"})]
    assert run(window, backends, Strategy.AFFINITY, prefetch=1, waiting=10)[0] == ("t1", "b")


def test_affinity_evicts_the_models_the_queue_wants_least():
    backends = [slot("a", 0, models=frozenset({"x"})), slot("b", 0, models=frozenset({"y"}))]
    window = [task("t1", models={"z"}), task("t2", models={"x"}), task("t3", models={"x"})]
    pairs = run(window, backends, Strategy.AFFINITY)
    assert ("t1", "b") in pairs and ("t2", "a") in pairs


# ---------------------------------------------------------------------------------------------------- invariants
def _random_case(rng):
    tags = ["video", "sdxl", "gpu:a100"]
    models = [frozenset({m}) for m in ("m1", "m2", "m3", "m4")] + [frozenset()]
    backends = []
    for i in range(rng.randint(0, 8)):
        vram = rng.choice([None, 8 * GIB, 24 * GIB, 80 * GIB])
        backends.append(BackendSlot(
            f"b{i}", rng.randint(0, 2), healthy=rng.random() > 0.15, accepting=rng.random() > 0.1,
            tags=frozenset(t for t in tags if rng.random() < 0.3), weight=rng.choice([0.5, 1.0, 2.0]),
            vram_total=vram, vram_free=None if vram is None else rng.randrange(0, vram + 1),
            models=rng.choice(models), last_used=rng.randint(0, 20)))
    window = []
    for j in range(rng.randint(0, 10)):
        window.append(QueuedTask(
            f"t{j}", rng.choice([0, 0, 0, 1, -1]),
            Needs(frozenset(t for t in tags if rng.random() < 0.1), rng.choice([None, None, 16 * GIB]),
                  rng.choice(models)),
            frozenset(f"b{k}" for k in range(8) if rng.random() < 0.1), rng.randint(0, 9)))
    window.sort(key=lambda t: -t.priority)
    return backends, window, rng.randint(0, 2), len(window) + rng.randint(0, 10)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_assign_invariants(strategy):
    rng = random.Random(f"assign-{strategy}")
    for _ in range(3000):
        backends, window, prefetch, waiting = _random_case(rng)
        pairs = assign(window, backends, strategy=strategy, prefetch=prefetch, waiting=waiting)
        by_id = {b.id: b for b in backends}
        tasks = {t.id: t for t in window}
        usable = [b for b in backends if b.healthy and b.accepting]
        assert len({t for t, _ in pairs}) == len(pairs)  # a task is placed once
        load = {b.id: b.inflight for b in backends}
        for step, (task_id, backend_id) in enumerate(pairs):
            backend = by_id[backend_id]
            assert backend.healthy and backend.accepting
            assert cannot_run_reason(tasks[task_id].needs, backend) is None
            deep = waiting - step >= sum(cannot_run_reason(tasks[task_id].needs, b) is None for b in usable)
            assert load[backend_id] < (1 + prefetch if deep else 1)  # prefetch slots only with a deep queue
            load[backend_id] += 1
        # work conserving: no task left over that an idle (untouched, empty) backend could have run
        placed = {t for t, _ in pairs}
        for t in window:
            if t.id in placed:
                continue
            for b in usable:
                assert not (load[b.id] == 0 and cannot_run_reason(t.needs, b) is None), (t, b, pairs)
        if strategy is not Strategy.AFFINITY:
            # FIFO: a task left waiting was never overtaken by a later one on a backend it could have used (other
            # than a prefetch slot, which depends on how many backends fit each task)
            order = {t.id: i for i, t in enumerate(window)}
            before = {b.id: b.inflight for b in backends}
            for later, backend_id in pairs:
                for t in window[:order[later]]:
                    if t.id not in placed and before[backend_id] == 0:
                        assert cannot_run_reason(t.needs, by_id[backend_id]) is not None, (t, later, pairs)
                before[backend_id] += 1


@pytest.mark.parametrize("strategy", list(Strategy))
def test_assign_given_only_the_free_backends_and_the_fleet_pairs_the_same(strategy):
    """The dispatcher hands ``assign`` only the backends with a free slot, and the pool's answer to which backends
    could ever run a task (whatever their state now): the pairs are those of the whole pool."""
    rng = random.Random(f"fleet-{strategy}")
    for _ in range(3000):
        backends, window, prefetch, waiting = _random_case(rng)
        usable = {b.id for b in backends if b.healthy and b.accepting}
        asked = []

        def could_run_anywhere(needs, backends=backends, asked=asked):
            asked.append(needs)
            return could_run(needs, backends)  # unhealthy and draining ones too: assign counts only the usable
        fleet = PoolView(could_run_anywhere, usable.__contains__)
        free = [b for b in backends if b.inflight < 1 + prefetch]
        expected = assign(window, backends, strategy=strategy, prefetch=prefetch, waiting=waiting)
        assert assign(window, free, strategy=strategy, prefetch=prefetch, waiting=waiting, view=fleet) == expected
        assert assign(window, backends, strategy=strategy, prefetch=prefetch, waiting=waiting,
                      view=fleet) == expected
        assert set(asked) <= {t.needs for t in window}


def test_could_run_lists_the_backends_that_fit_whatever_their_load():
    backends = [slot("a", 2, tags=frozenset({"video"})), slot("b", healthy=False, tags=frozenset({"video"})),
                slot("c")]
    assert could_run(Needs(frozenset({"video"})), backends) == ["a", "b"]
    assert could_run(Needs(), backends) == ["a", "b", "c"]
    assert could_run(Needs(vram=GIB), backends) == []


def test_affinity_bounds_how_long_a_task_is_passed_over():
    """Replaying dispatch rounds: the head task of a level runs within affinity_max_skips rounds."""
    rng = random.Random(11)
    for _ in range(300):
        models = [frozenset({m}) for m in ("m1", "m2", "m3", "m4")]
        backends = [BackendSlot(f"b{i}", 1, models=rng.choice(models)) for i in range(4)]
        window = [QueuedTask(f"t{j}", 0, Needs(models=rng.choice(models))) for j in range(12)]
        head = window[0]
        skips = 0
        for _round in range(40):
            current = [QueuedTask(t.id, t.priority, t.needs, t.avoid, skips if t.id == head.id else 0)
                       for t in window]
            freed = rng.randrange(len(backends))  # one backend has a free slot each round
            views = [BackendSlot(b.id, 1 if i == freed else 2, models=b.models) for i, b in enumerate(backends)]
            pairs = assign(current, views, strategy=Strategy.AFFINITY, prefetch=1, waiting=100)
            assert len(pairs) == 1
            task_id, backend_id = pairs[0]
            if task_id == head.id:
                break
            assert head.id in skipped_by(current, pairs)
            skips += 1
            window = [t for t in window if t.id != task_id]
            backends = [BackendSlot(b.id, 1, models=next(t.needs.models for t in current if t.id == task_id))
                        if b.id == backend_id else b for b in backends]
        assert skips <= 16


# ---------------------------------------------------------------------------------------------------- window
def test_free_slots_count_only_healthy_accepting_backends():
    backends = [slot("a", 0), slot("b", 1), slot("c", 2), slot("d", 0, healthy=False), slot("e", 0, accepting=False),
                slot("f", 5)]
    assert free_prompt_slots(backends, prefetch=0) == 1  # only a: b and c are busy, f is over its limit
    assert free_prompt_slots(backends, prefetch=1) == 2 + 1  # a twice, b once
    assert free_prompt_slots(backends, prefetch=2) == 3 + 2 + 1
    assert free_prompt_slots([], prefetch=1) == 0


def test_window_holds_every_free_slot_plus_the_lookahead():
    backends = [slot(f"b{i}", i % 3) for i in range(64)]
    assert window_size(backends, prefetch=1, lookahead=32) == free_prompt_slots(backends, 1) + 32
    assert window_size([slot("a", 2)], prefetch=1, lookahead=5) == 5


# ---------------------------------------------------------------------------------------------------- order
def costly(id, cost, priority=0, created_ms=0):
    return QueuedTask(id, priority, created_ms=created_ms, cost=cost)


def test_fifo_keeps_queue_order():
    window = [costly("a", 1), costly("b", 9), costly("c", 5)]
    assert [t.id for t in ordered(window, Order.FIFO, now_ms=0, ageing_s=0)] == ["a", "b", "c"]


def test_longest_first_orders_each_level_by_cost_and_keeps_levels_strict():
    window = [costly("h1", 1, priority=1), costly("n1", 2), costly("n2", 50), costly("h2", 7, priority=1),
              costly("n3", 2), costly("l1", 99, priority=-1)]
    got = [t.id for t in ordered(window, Order.LONGEST_FIRST, now_ms=0, ageing_s=0)]
    assert got == ["h2", "h1", "n2", "n1", "n3", "l1"]  # equal costs keep queue order


def test_longest_first_lets_a_task_that_waited_an_ageing_period_go_first():
    now = 1_000_000
    window = [costly("old-cheap", 1, created_ms=now - 301_000), costly("new-costly", 100, created_ms=now - 1000),
              costly("mid-cheap", 2, created_ms=now - 200_000)]
    got = [t.id for t in ordered(window, Order.LONGEST_FIRST, now_ms=now, ageing_s=300)]
    assert got == ["old-cheap", "new-costly", "mid-cheap"]
    assert level_at(window[0], now, 300) == 1 and level_at(window[1], now, 300) == 0
    assert level_at(window[0], now, 0) == 0  # strict priority: no ageing


def test_longest_first_makes_longest_processing_time_schedules():
    """Replaying list scheduling on identical backends: the window in longest_first order finishes a heavy-tailed
    batch within 4/3 of the ideal (Graham's bound for LPT), where FIFO order can take almost twice as long."""
    rng = random.Random(3)
    for _ in range(200):
        costs = [min(120, int(2 * rng.paretovariate(1.5))) for _ in range(rng.randrange(20, 200))]
        window = [costly(f"t{i}", c) for i, c in enumerate(costs)]
        machines = rng.randrange(2, 17)
        ideal = max(sum(costs) / machines, max(costs))
        finish = [0.0] * machines
        for task_ in ordered(window, Order.LONGEST_FIRST, now_ms=0, ageing_s=0):
            index = finish.index(min(finish))
            finish[index] += task_.cost
        assert max(finish) <= ideal * 4 / 3 + 1e-9


def test_least_busy_breaks_ties_by_the_work_in_flight():
    backends = [slot("long", 1, work=120.0), slot("short", 1, work=3.0), slot("mid", 1, work=20.0)]
    assert run([costly("t", 50)], backends, prefetch=1, waiting=10) == [("t", "short")]
    # within one round the work assigned counts too: the longest tasks spread like LPT
    window = [costly("a", 60), costly("b", 40), costly("c", 30)]
    pairs = run(window, [slot("x", 1, work=10.0), slot("y", 1, work=50.0), slot("z", 1, work=35.0)], prefetch=1,
                waiting=10)
    assert pairs == [("a", "x"), ("b", "z"), ("c", "y")]
    assert run([costly("t", 1)], [slot("busy", 1, work=0.0), slot("idle", 0, work=0.0)]) == [("t", "idle")]
