"""The leader's decisions on cancels made on any replica (tracker.cancels): which task events they are, and what it
does for each, by the task's status, whether a cancel was asked, its prompt's book entry and a request of its own."""
from __future__ import annotations

import pytest

from comfyart.pool.backend import Backend
from comfyart.tracker.cancels import InterruptPrompt, StopPrompt, cancel_action, is_cancel
from comfyart.tracker.prompts import PromptState


def state(*, interrupting: bool = False) -> PromptState:
    backend = Backend("static:a", "static", "static", "http://127.0.0.1:1/a", None)
    made = PromptState("t1", total_nodes=3, backend=backend)
    made.interrupt_by = 5.0 if interrupting else None
    return made


@pytest.mark.parametrize("status, asked, in_book, interrupting, busy, expected", [
    pytest.param("canceled", False, True, False, False, StopPrompt(), id="canceled-in-book"),
    pytest.param("canceled", True, True, True, False, StopPrompt(), id="canceled-while-interrupting"),
    pytest.param("canceled", False, False, False, False, None, id="canceled-not-in-flight-here"),
    pytest.param("canceled", False, True, False, True, None, id="canceled-by-a-request-here"),
    pytest.param("running", True, True, False, False, InterruptPrompt(), id="asked-running"),
    pytest.param("running", True, True, True, False, None, id="asked-already-interrupting"),
    pytest.param("running", True, True, False, True, None, id="asked-by-a-request-here"),
    pytest.param("running", True, False, False, False, None, id="asked-not-in-flight-here"),
    pytest.param("pending", True, True, False, False, None, id="asked-but-pending"),
    pytest.param("running", False, True, False, False, None, id="plain-running"),
    pytest.param("completed", True, True, False, False, None, id="ended"),
])
def test_cancel_action(status, asked, in_book, interrupting, busy, expected):
    entry = state(interrupting=interrupting) if in_book else None
    assert cancel_action(status, asked, entry, busy=busy) == expected


@pytest.mark.parametrize("event, cancel", [
    pytest.param({"type": "task", "id": "t", "status": "canceled", "previous": "running"}, True, id="canceled"),
    pytest.param({"type": "task", "id": "t", "status": "running", "previous": "running", "cancel_asked_ms": 5},
                 True, id="asked"),
    pytest.param({"type": "task", "id": "t", "status": "running", "previous": "pending"}, False, id="started"),
    pytest.param({"type": "progress", "id": "t", "status": "canceled"}, False, id="progress"),
    pytest.param({"type": "lagged", "detail": "x"}, False, id="lagged"),
])
def test_is_cancel(event, cancel):
    assert is_cancel(event) is cancel
