"""A task event read back from the stream (``store.eventlog.event_of``) is the one a single process publishes
(``codec.task_event``)."""
from __future__ import annotations

from comfyart.models import TaskStatus
from comfyart.store.codec import task_event
from comfyart.store.eventlog import event_of, published


def entry(**fields: str) -> dict[str, str]:
    return {"t": "task", "id": "T1", "s": "", "p": "", "c": "", "o": "", "w": "", "d": "", **fields}


def test_a_status_change_with_every_field():
    fields = {"finished_ms": 5, "outputs": [{"filename": "a.png"}], "error": None, "prompt": {"1": {}},
              "history": {"x": 1}, "status_note": TaskStatus.RUNNING}
    expected = task_event("T1", TaskStatus.COMPLETED, TaskStatus.RUNNING, "cid", fields, "alice")
    assert event_of(entry(s="completed", p="running", c="cid", o="alice", d=published(fields))) == expected


def test_a_new_task_has_no_previous_status_nor_client():
    expected = task_event("T1", TaskStatus.PENDING, None, None, {"created_ms": 7})
    assert event_of(entry(s="pending", d=published({"created_ms": 7}))) == expected


def test_a_due_webhook_is_said():
    expected = task_event("T1", TaskStatus.FAILED, TaskStatus.PENDING, None, {"error": "x", "webhook_due": True})
    assert event_of(entry(s="failed", p="pending", w="1", d=published({"error": "x"}))) == expected


def test_progress():
    event = event_of({"t": "progress", "id": "T1", "d": published({"prompt_id": "p", "progress": 0.5})})
    assert event == {"type": "progress", "id": "T1", "prompt_id": "p", "progress": 0.5}


def test_events_go_through_redis_with_a_redis_of_ones_own_unless_told():
    from comfyart.config.settings import Settings
    from comfyart.store.eventlog import replicated

    shared = {"redis": {"url": "redis://127.0.0.1:6379/0"}}
    assert not replicated(Settings())  # the embedded Redis: one process
    assert replicated(Settings.model_validate(shared))
    assert not replicated(Settings.model_validate({**shared, "cluster": {"replicated": False}}))
    assert replicated(Settings.model_validate({"cluster": {"replicated": True}}))
