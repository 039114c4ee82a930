"""What a backend can run (policy.inventory): what an inventory lacks of a task's needs, and why no backend of a
fleet could run a task."""
from __future__ import annotations

import pytest

from comfyart.policy.inventory import Fleet, Inventory, lacking_reason, listed
from comfyart.policy.needs import Needs, needs_of_record, needs_record
from comfyart.policy.scheduling import BackendSlot, QueuedTask, Strategy, assign, blocked_reason, cannot_run_reason

SDXL, SD15 = "sd_xl_base_1.0.safetensors", "v1-5-pruned.safetensors"


def inventory(digest: str = "a", checkpoints=(SD15,), nodes=("CheckpointLoaderSimple", "KSampler", "SaveImage"),
              samplers=("euler",)) -> Inventory:
    return Inventory(digest, frozenset(nodes), {("CheckpointLoaderSimple", "ckpt_name"): frozenset(checkpoints),
                                                ("KSampler", "sampler_name"): frozenset(samplers)})


def needs(*checkpoints: str, nodes=("CheckpointLoaderSimple", "SaveImage"), extra=()) -> Needs:
    return Needs(nodes=frozenset(nodes),
                 values=frozenset({("CheckpointLoaderSimple", "ckpt_name", c) for c in checkpoints} | set(extra)))


@pytest.mark.parametrize(("task", "missing"), [
    (needs(SD15), ()),
    (needs(SDXL), ("ckpt_name 'sd_xl_base_1.0.safetensors'",)),
    (needs(SD15, nodes=("CheckpointLoaderSimple", "SaveVideo")), ("node SaveVideo",)),
    (needs(SD15, SDXL, nodes=("CheckpointLoaderSimple", "SaveVideo")),
     ("ckpt_name 'sd_xl_base_1.0.safetensors'", "node SaveVideo")),
    (needs(extra={("KSampler", "sampler_name", "dpmpp_2m")}), ("sampler_name 'dpmpp_2m'",)),
    # an input that is no combo on this backend takes any value; a value of a class it lacks is not listed twice
    (needs(extra={("KSampler", "seed", "5")}), ()),
    (needs(extra={("SaveVideo", "format", "mp4")}, nodes=("SaveVideo",)), ("node SaveVideo",)),
    (Needs(), ()),
])
def test_missing_names_each_node_class_and_value_the_inventory_lacks(task, missing):
    inv = inventory()
    assert inv.missing(task) == missing
    assert inv.covers(task) is (not missing)
    assert inv.missing(task) is inv.missing(task)  # worked out once per distinct needs


def test_the_verdicts_remembered_are_bounded(monkeypatch):
    import comfyart.policy.inventory as module
    monkeypatch.setattr(module, "MAX_VERDICTS", 4)
    inv = inventory()
    for i in range(10):
        inv.missing(needs(f"m{i}.safetensors"))
    assert len(inv._verdicts) <= 4


def test_models_are_the_choices_that_name_model_files():
    inv = inventory(checkpoints=(SD15, SDXL))
    assert inv.models() == {SD15, SDXL}  # sampler names are combos, not models


def test_reasons_list_three_things_then_count_the_rest():
    assert listed(["a", "b"]) == "a, b"
    assert lacking_reason(["a", "b", "c", "d", "e"]) == "lacks a, b, c and 2 more"


@pytest.mark.parametrize(("inventories", "task", "refusal"), [
    ((inventory("a"), inventory("b", (SDXL,))), needs(SDXL), None),
    ((inventory("a"),), needs(SDXL), "no backend has ckpt_name 'sd_xl_base_1.0.safetensors'"),
    ((inventory("a"), inventory("b")), needs(SDXL), "no backend has ckpt_name 'sd_xl_base_1.0.safetensors'"),
    # each need is somewhere, but on no one backend
    ((inventory("a", (SDXL,)), inventory("b", nodes=("CheckpointLoaderSimple", "SaveImage", "SaveVideo"))),
     needs(SDXL, nodes=("CheckpointLoaderSimple", "SaveVideo")),
     "no backend has all it needs: 1 backend(s) lacks ckpt_name 'sd_xl_base_1.0.safetensors'; "
     "1 backend(s) lacks node SaveVideo"),
    ((), needs(SDXL), None),  # nothing known: checked at dispatch
])
def test_fleet_refuses_what_no_one_backend_can_run(inventories, task, refusal):
    assert Fleet({}, frozenset(), inventories).refusal(task) == refusal


def test_needs_records_round_trip():
    task = Needs(frozenset({"gpu"}), 8 << 30, frozenset({SDXL}), frozenset({"A", "B"}),
                 frozenset({("A", "ckpt_name", SDXL)}))
    record = needs_record(task, 12.5)
    assert record == {"nodes": ["A", "B"], "values": [["A", "ckpt_name", SDXL]], "models": [SDXL], "tags": ["gpu"],
                      "vram_mb": 8192, "cost": 12.5}
    assert needs_of_record(record) == (task, 12.5)
    assert needs_record(Needs(), 0.0) == {}
    assert needs_of_record({"values": [["only two", "parts"]]}) == (Needs(), 0.0)  # not understood: asks nothing


def slot(backend_id: str, inv: Inventory | None, *, healthy=True, accepting=True, inflight=0) -> BackendSlot:
    return BackendSlot(backend_id, inflight, healthy, accepting, inventory=inv)


def test_a_backend_runs_a_task_only_when_its_inventory_covers_it():
    assert cannot_run_reason(needs(SDXL), slot("a", inventory())) == "lacks ckpt_name 'sd_xl_base_1.0.safetensors'"
    assert cannot_run_reason(needs(SDXL), slot("a", None)) == "has not listed its nodes and models yet"
    assert cannot_run_reason(Needs(), slot("a", None)) is None  # a task that asks nothing of it
    assert cannot_run_reason(needs(SD15), slot("a", inventory())) is None


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_gives_each_task_a_backend_that_has_its_model(strategy):
    sd15, sdxl = inventory("a"), inventory("b", (SDXL,))
    backends = [slot("a1", sd15), slot("a2", sd15), slot("b1", sdxl)]
    window = [QueuedTask(f"t{i}", needs=needs(SDXL if i % 3 == 0 else SD15)) for i in range(6)]
    pairs = assign(window, backends, strategy=strategy, prefetch=1, waiting=100)  # deep: prefetch slots count
    by_task = {t.id: t for t in window}
    holders = {"a1": sd15, "a2": sd15, "b1": sdxl}
    assert len(pairs) == 6
    for task_id, backend_id in pairs:
        assert holders[backend_id].covers(by_task[task_id].needs), (task_id, backend_id)


@pytest.mark.parametrize(("backends", "reason"), [
    ([slot("a", inventory()), slot("b", inventory("b", (SDXL,)), inflight=2)], None),  # busy, not blocked
    ([slot("a", inventory()), slot("b", inventory("b", (SDXL,)), healthy=False)], "only b (unhealthy) could run it"),
    ([slot("b", inventory("b", (SDXL,)), accepting=False)], "only b (not taking work) could run it"),
    ([slot("a", inventory()), slot("c", None)],
     "1 backend(s) has not listed its nodes and models yet; "
     "1 backend(s) lacks ckpt_name 'sd_xl_base_1.0.safetensors'"),
    ([], "no backends"),
])
def test_blocked_reason_names_the_backends_a_waiting_task_waits_for(backends, reason):
    assert blocked_reason(needs(SDXL), backends) == reason
