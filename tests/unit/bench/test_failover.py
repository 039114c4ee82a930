"""``bench/failover.py``'s measure: which event-stream entries are a dispatch or a completion, and each kill paired
with the election after it and the new leader's first dispatch and completion (never the dead leader's late
writes, never the next kill's)."""
from __future__ import annotations

import importlib.util
import json
from types import ModuleType

from tests.support.paths import ROOT


def load_failover() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_failover", ROOT / "bench" / "failover.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


failover = load_failover()


def entry(status: str, previous: str, kind: str = "task", **data: object) -> dict[str, str]:
    return {"t": kind, "id": "t1", "s": status, "p": previous, "d": json.dumps(data)}


def test_a_recorded_submission_is_a_dispatch_and_a_move_to_completed_a_completion():
    assert failover.mark_of(entry("pending", "pending", submitted_ms=5, backend="b0")) == "dispatch"
    assert failover.mark_of(entry("completed", "running")) == "completion"
    assert failover.mark_of(entry("completed", "pending")) == "completion"


def test_other_entries_mark_nothing():
    assert failover.mark_of(entry("pending", "")) is None  # a new task
    assert failover.mark_of(entry("pending", "pending")) is None  # a requeue: no submitted_ms
    assert failover.mark_of(entry("running", "pending", started_ms=3)) is None
    assert failover.mark_of(entry("completed", "completed")) is None  # a later change of a completed task
    assert failover.mark_of(entry("pending", "pending", kind="progress", submitted_ms=1)) is None
    assert failover.mark_of({"t": "task", "s": "pending", "p": "pending"}) is None  # no data


def test_a_stream_id_is_redis_clock_in_ms():
    assert failover.stream_ms("1733550000123-7") == 1733550000123


def test_each_kill_counts_from_its_own_election_and_stops_at_the_next_kill():
    kills = [1000, 5000]
    elections = [500, 3000, 7000]  # the first one was before any kill
    marks = [(1001, "dispatch"), (1002, "completion"),  # the dead leader's last scripts, before the election
             (3040, "completion"), (3050, "dispatch"), (3100, "dispatch"),
             (7020, "dispatch")]  # the second kill: nothing completed before the run ended
    rows = failover.pair_takeovers(kills, elections, marks)
    assert rows == [{"killed_ms": 1000, "lease": 2000, "dispatch": 2050, "completion": 2040},
                    {"killed_ms": 5000, "lease": 2000, "dispatch": 2020, "completion": None}]


def test_a_kill_without_an_election_before_the_next_kill_has_no_figures():
    rows = failover.pair_takeovers([1000, 2000], [2500], [(2600, "dispatch")])
    assert [(r["lease"], r["dispatch"], r["completion"]) for r in rows] == [(None, None, None), (500, 600, None)]


def test_summary_takes_percentiles_of_the_figures_there_are():
    assert failover.summary([10, None, 30, 20]) == {"count": 3, "missing": 1, "p50": 20, "p90": 30, "max": 30}
    assert failover.summary([None]) == {"count": 0, "missing": 1}
