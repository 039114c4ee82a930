"""The late-landing decisions (tracker.latecomers): which prompts a backend shows that were found vanished, for how
long they are watched, and what the book's own prompts are never taken for."""
from __future__ import annotations

import pytest

from comfyart.tracker.latecomers import LateWatch, late_frame, late_in_queue


def queue_of(running: list[str], pending: list[str]) -> dict:
    return {"queue_running": [[0, p, {}, {}, []] for p in running],
            "queue_pending": [[i + 1, p, {}, {}, []] for i, p in enumerate(pending)]}


def watching(*prompt_ids: str, keep_s: float = 10.0, at: float = 100.0) -> LateWatch:
    watch = LateWatch(keep_s)
    for prompt_id in prompt_ids:
        watch.note(prompt_id, task_id=f"t-{prompt_id}", backend_id="static:a", now=at)
    return watch


def test_a_vanished_prompt_is_watched_for_keep_s_then_forgotten():
    watch = watching("p")
    assert watch.get("p", 109.9) is not None
    assert watch.get("p", 109.9).task_id == "t-p"
    assert watch.get("p", 110.0) is None
    assert watch.get("p", 105.0) is None  # gone once expired
    assert watch.watched(105.0) == []


def test_noting_prunes_the_expired():
    watch = watching("old")
    watch.note("new", task_id="t", backend_id="b", now=200.0)
    assert watch.watched(200.0) == ["new"]


@pytest.mark.parametrize("running, pending, book, expected", [
    pytest.param([], [], set(), [], id="empty-queue"),
    pytest.param(["x"], ["y"], set(), [], id="only-others"),
    pytest.param([], ["late2", "late1"], set(), ["late1", "late2"], id="queued-sorted"),
    pytest.param(["late1"], ["late2"], set(), ["late2", "late1"], id="queued-before-running"),
    pytest.param(["late1"], [], {"late1"}, [], id="held-by-the-book-again"),
    pytest.param(["mine"], ["late1"], {"mine"}, ["late1"], id="beside-the-books-own"),
])
def test_late_in_queue_names_watched_prompts_the_book_does_not_hold(running, pending, book, expected):
    watch = watching("late1", "late2")
    assert late_in_queue(queue_of(running, pending), watch, book, 101.0) == expected


def test_late_in_queue_ignores_an_expired_watch():
    assert late_in_queue(queue_of(["late1"], []), watching("late1"), set(), 111.0) == []


@pytest.mark.parametrize("prompt_id, book, now, late", [
    pytest.param("late1", set(), 101.0, True, id="watched"),
    pytest.param("late1", {"late1"}, 101.0, False, id="in-the-book"),
    pytest.param("other", set(), 101.0, False, id="not-watched"),
    pytest.param(None, set(), 101.0, False, id="no-prompt-id"),
    pytest.param("late1", set(), 110.5, False, id="expired"),
])
def test_a_frame_of_a_watched_prompt_the_book_does_not_hold_is_late(prompt_id, book, now, late):
    assert (late_frame(prompt_id, watching("late1"), book, now) is not None) is late


def test_at_most_so_many_are_watched_the_oldest_forgotten_first():
    from comfyart.tracker.latecomers import LateWatch

    watch = LateWatch(keep_s=600.0, most=3)
    for i in range(5):
        watch.note(f"p{i}", task_id=f"t{i}", backend_id="b", now=float(i))
    assert watch.watched(5.0) == ["p2", "p3", "p4"]
    watch.note("p2", task_id="t2", backend_id="b", now=6.0)  # vanished again: now the newest
    watch.note("p5", task_id="t5", backend_id="b", now=7.0)
    assert watch.watched(7.0) == ["p4", "p2", "p5"]

