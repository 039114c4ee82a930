"""The in-flight book's view of previews (tracker.prompts): which prompt a backend runs, from its frames (previews
name none), and the latest preview of a task's attempt in flight."""
from __future__ import annotations

from comfyart.models import BackendState
from comfyart.pool.backend import Backend
from comfyart.tracker.prompts import Preview, PromptBook, note_running


def test_a_backend_runs_the_prompt_that_started_last_until_it_ends():
    running: dict[str, str] = {}
    note_running(running, "b1", "execution_start", {"prompt_id": "p1"})
    note_running(running, "b2", "execution_start", {"prompt_id": "q1"})
    assert running == {"b1": "p1", "b2": "q1"}
    note_running(running, "b1", "executing", {"node": "3", "prompt_id": "p1"})
    note_running(running, "b1", "progress", {"value": 1, "max": 2, "prompt_id": "p1"})
    assert running["b1"] == "p1"
    note_running(running, "b1", "executing", {"node": None, "prompt_id": "p0"})  # an older prompt's end
    assert running["b1"] == "p1"
    note_running(running, "b1", "executing", {"node": None, "prompt_id": "p1"})
    assert running == {"b2": "q1"}
    note_running(running, "b2", "execution_start", {"prompt_id": 7})  # not a prompt id: ignored
    assert running == {"b2": "q1"}


def test_the_latest_preview_is_the_task_attempt_s_while_it_is_in_flight():
    book = PromptBook()
    backend = Backend("b1", "static", "static", "http://127.0.0.1:1/b1", None, state=BackendState.HEALTHY)
    state = book.open(backend, "p1", "t1", {"3": {"class_type": "KSampler", "inputs": {}}})
    assert book.latest_preview("t1", "p1") is None
    state.preview = Preview("3", b"frame")
    assert book.latest_preview("t1", "p1") == Preview("3", b"frame")
    assert book.latest_preview("t2", "p1") is None  # another task's attempt
    assert book.latest_preview("t1", None) is None
    book.close(backend, "p1", done=True)
    assert book.latest_preview("t1", "p1") is None
