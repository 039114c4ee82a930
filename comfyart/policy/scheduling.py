"""Pure scheduling decisions: in what order queued tasks run, and which backend takes each. No I/O, no clock.

The dispatcher looks at a window of the queue (as many task ids, in queue order, as there are free slots, plus
``lookahead``) and at the backends, and ``assign`` pairs tasks with free slots:

* a task runs only where its required tags are present, its declared VRAM fits, and a slot is free;
* the queue is ordered by ``queue_score``: strict priority between levels, FIFO within one, and a waiting task
  gains one level per ``ageing_s`` so that nothing starves;
* the strategy picks among the backends a task may use: ``least_busy``, ``round_robin``, ``weighted`` or
  ``affinity`` (least busy, but a task goes where its models are already loaded when that leaves no backend
  idle; a task passed over that way ``affinity_max_skips`` times runs next wherever it can);
* a slot beyond the running prompt (``prefetch``) is only used while the queue is at least as long as the
  number of backends the task could go to: near the end of the queue a prompt waits for an idle backend rather
  than queueing behind a long one on a busy backend.
"""
from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from comfyart.policy.inventory import Inventory, lacking_reason
from comfyart.policy.needs import Needs


class Order(enum.StrEnum):
    """The order of the tasks of one priority level."""

    FIFO = "fifo"  # as they were queued
    LONGEST_FIRST = "longest_first"  # the most expensive first (``graph_cost``), within the window and ageing


class Strategy(enum.StrEnum):
    LEAST_BUSY = "least_busy"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    AFFINITY = "affinity"


@dataclass(frozen=True)
class QueuedTask:
    id: str
    priority: int = 0
    needs: Needs = field(default_factory=Needs)
    avoid: frozenset[str] = frozenset()  # backends where it already failed: used only when no other is free
    skips: int = 0  # times affinity ran a later task before it
    created_ms: int = 0
    cost: float = 0.0  # graph_cost of its graph


def level_at(task: QueuedTask, now_ms: int, ageing_s: float) -> int:
    """A task's priority level now: its own, plus one per ``ageing_s`` it has waited."""
    if ageing_s <= 0:
        return task.priority
    return task.priority + max(0, now_ms - task.created_ms) // int(ageing_s * 1000)


def ordered(window: Sequence[QueuedTask], order: Order, now_ms: int, ageing_s: float) -> list[QueuedTask]:
    """The window in the order ``assign`` should consider it. ``fifo`` keeps queue order. ``longest_first`` takes
    the most expensive tasks of each level first (a heavy-tailed batch then ends with short tasks filling the
    gaps, not with one long task running alone); with ageing, a cheap task that waited ``ageing_s`` moves up a
    level and goes ahead of the expensive tasks queued after it."""
    if order is Order.FIFO:
        return list(window)
    rank = {task.id: index for index, task in enumerate(window)}
    return sorted(window, key=lambda t: (-level_at(t, now_ms, ageing_s), -t.cost, rank[t.id]))


@dataclass(frozen=True)
class BackendSlot:
    id: str
    inflight: int
    healthy: bool = True
    accepting: bool = True
    tags: frozenset[str] = frozenset()
    weight: float = 1.0
    vram_total: int | None = None
    vram_free: int | None = None
    models: frozenset[str] = frozenset()  # of the last prompt it was given: loaded once that one runs
    last_used: int = 0  # dispatch sequence number of its last prompt; 0: never
    work: float = 0.0  # graph_cost of the prompts it holds
    inventory: Inventory | None = None  # its node classes and models; None: not listed yet


def cannot_run_reason(needs: Needs, backend: BackendSlot) -> str | None:
    """Why ``backend`` can never run a task with ``needs`` (whatever its load), or None."""
    missing = needs.tags - backend.tags
    if missing:
        return f"lacks tag(s) {', '.join(sorted(missing))}"
    if needs.vram is not None:
        if backend.vram_total is None:
            return "reports no VRAM figures"
        if backend.vram_total < needs.vram:
            return f"has {backend.vram_total >> 20} MiB of VRAM, the task needs {needs.vram >> 20} MiB"
    if needs.of_inventory:
        if backend.inventory is None:
            return "has not listed its nodes and models yet"
        lacking = backend.inventory.missing(needs)
        if lacking:
            return lacking_reason(lacking)
    return None


def unschedulable_reason(needs: Needs, backends: Sequence[BackendSlot]) -> str | None:
    """Why no backend in the pool could ever run a task, or None when one could (busy or not)."""
    if not backends:
        return "no backends"
    reasons = Counter(cannot_run_reason(needs, b) for b in backends)
    if None in reasons:
        return None
    return "; ".join(f"{n} backend(s) {reason}" for reason, n in sorted(reasons.items()))


def blocked_reason(needs: Needs, backends: Sequence[BackendSlot]) -> str | None:
    """Why a task waits whatever frees up: no healthy backend that takes work could run it. Names the backends that
    could once they are back (unhealthy, disabled, draining), else says why none could. None when one that takes
    work could (the task merely waits its turn)."""
    able = [b for b in backends if cannot_run_reason(needs, b) is None]
    if any(b.healthy and b.accepting for b in able):
        return None
    if able:
        names = ", ".join(f"{b.id} ({'unhealthy' if not b.healthy else 'not taking work'})" for b in able[:3])
        more = f" and {len(able) - 3} more" if len(able) > 3 else ""
        return f"only {names}{more} could run it"
    return unschedulable_reason(needs, backends)


def could_run(needs: Needs, backends: Sequence[BackendSlot]) -> list[str]:
    """The ids of the backends that could ever run a task with ``needs`` (busy or not), in their order."""
    return [b.id for b in backends if cannot_run_reason(needs, b) is None]


@dataclass(frozen=True)
class PoolView:
    """What ``assign`` may ask of the pool beyond the backends it is handed: the ids of every backend that could
    ever run a task with these needs, whatever its state (the pool keeps that answer from one round to the next),
    and whether one is healthy and accepting now. ``assign`` counts the usable ones among them (the prefetch rule)
    only when fewer tasks wait than there are ids."""

    could_run: Callable[[Needs], Collection[str]]
    usable: Callable[[str], bool]


def _view_of(usable: Sequence[BackendSlot]) -> PoolView:
    """The view when ``assign`` is handed every backend: worked out once per distinct needs in a round (most tasks
    share theirs), not once per task and backend."""
    fits: dict[Needs, list[str]] = {}

    def could_run_here(needs: Needs) -> list[str]:
        fit = fits.get(needs)
        if fit is None:
            fit = fits[needs] = could_run(needs, usable)
        return fit
    return PoolView(could_run_here, lambda _: True)


@dataclass
class _Board:
    """The backends with a free slot as the assignment of one window goes on: loads and loaded models change with
    each pick. A backend whose slots are all taken cannot take a task of this round: it is left out, so that a
    round costs the same on a fleet of 1,000 busy backends as on one."""

    backends: dict[str, BackendSlot]
    order: dict[str, int]
    inflight: dict[str, int]
    models: dict[str, frozenset[str]]
    last_used: dict[str, int]
    work: dict[str, float]
    slots: int
    seq: int
    view: PoolView
    _fitting: dict[Needs, list[str]] = field(default_factory=dict)
    _reach: dict[Needs, int] = field(default_factory=dict)

    @classmethod
    def of(cls, backends: Sequence[BackendSlot], slots: int, view: PoolView) -> _Board:
        # ``seq`` starts past every board backend's last_used, so the one picked last is the most recent
        free = [b for b in backends if b.healthy and b.accepting and b.inflight < slots]
        return cls({b.id: b for b in free}, {b.id: i for i, b in enumerate(free)},
                   {b.id: b.inflight for b in free}, {b.id: b.models for b in free},
                   {b.id: b.last_used for b in free}, {b.id: b.work for b in free}, slots,
                   max((b.last_used for b in free), default=0), view)

    def fitting(self, needs: Needs) -> list[str]:
        """The board's backends that could ever run a task with ``needs``, in board order, once per needs."""
        fit = self._fitting.get(needs)
        if fit is None:
            fit = self._fitting[needs] = could_run(needs, list(self.backends.values()))
        return fit

    def deep_enough(self, needs: Needs, waiting: int) -> bool:
        """Whether ``waiting`` tasks are at least as many as the usable backends that could ever run a task with
        ``needs``: then prefetch slots count. Most rounds settle it on the size of the pool's answer alone."""
        ids = self.view.could_run(needs)
        if waiting >= len(ids):
            return True
        reach = self._reach.get(needs)
        if reach is None:
            reach = self._reach[needs] = sum(1 for b in ids if self.view.usable(b))
        return waiting >= reach

    def load_key(self, backend_id: str) -> tuple[float, ...]:
        backend = self.backends[backend_id]
        return (self.inflight[backend_id], self.work[backend_id], -(backend.vram_free or 0),
                self.last_used[backend_id], self.order[backend_id])

    def take(self, backend_id: str, task: QueuedTask) -> None:
        self.inflight[backend_id] += 1
        self.work[backend_id] += task.cost
        if task.needs.models:
            self.models[backend_id] = task.needs.models
        self.seq += 1
        self.last_used[backend_id] = self.seq


def _candidates(task: QueuedTask, board: _Board, waiting: int) -> list[str]:
    """Backends that may take ``task`` now; those it already failed on only when no other may. Prefetch slots
    count only while at least as many tasks wait as there are backends that could run this one."""
    fit = board.fitting(task.needs)
    limit = board.slots if board.deep_enough(task.needs, waiting) else 1
    free = [b for b in fit if board.inflight[b] < limit]
    return [b for b in free if b not in task.avoid] or free


def _by_strategy(strategy: Strategy, candidates: Sequence[str], board: _Board) -> str:
    if strategy is Strategy.ROUND_ROBIN:
        return min(candidates, key=lambda b: (board.last_used[b], board.order[b]))
    if strategy is Strategy.WEIGHTED:
        return min(candidates, key=lambda b: ((board.inflight[b] + 1) / max(board.backends[b].weight, 1e-9),
                                              board.last_used[b], board.order[b]))
    return min(candidates, key=board.load_key)


def _pick_affinity(window: Sequence[QueuedTask], board: _Board, waiting: int, max_skips: int,
                   ) -> tuple[int, str] | None:
    runnable = [(i, t, c) for i, t in enumerate(window) if (c := _candidates(t, board, waiting))]
    if not runnable:
        return None
    first_index, first, first_candidates = runnable[0]
    any_idle = any(board.inflight[b] == 0 for i, t, c in runnable for b in c)
    if first.skips < max_skips:
        # the earliest task of the first one's level whose models a free backend has loaded; while a backend is
        # idle only idle backends count, so affinity never keeps one waiting
        for index, task, candidates in runnable:
            if task.priority != first.priority:
                break
            if not task.needs.models:
                continue
            matching = [b for b in candidates if board.models[b] == task.needs.models
                        and (board.inflight[b] == 0 or not any_idle)]
            if matching:
                return index, min(matching, key=board.load_key)
    # no match: the first task goes to the least busy backend, evicting the models the window wants least
    demand = Counter(t.needs.models for t in window if t.needs.models)
    return first_index, min(first_candidates, key=lambda b: (board.inflight[b], demand[board.models[b]],
                                                             *board.load_key(b)[2:]))


def assign(window: Sequence[QueuedTask], backends: Sequence[BackendSlot], *, strategy: Strategy, prefetch: int,
           waiting: int, affinity_max_skips: int = 16, view: PoolView | None = None) -> list[tuple[str, str]]:
    """Pairs (task id, backend id) for as many tasks of ``window`` (in queue order) as free slots allow.

    ``waiting`` counts every queued task (the window is its head); a backend takes ``1 + prefetch`` prompts, the
    extra ones only while at least as many tasks wait as there are backends that could run the task. A task no
    free backend can run is passed over, so it never blocks those behind it. Without ``view``, ``backends`` is
    the whole pool; with it, ``backends`` need only hold those with a free slot (the same pairs come out)."""
    if view is None:
        view = _view_of([b for b in backends if b.healthy and b.accepting])
    board = _Board.of(backends, 1 + prefetch, view)
    pending = list(window)
    pairs: list[tuple[str, str]] = []
    while pending:
        left = waiting - len(pairs)
        if strategy is Strategy.AFFINITY:
            picked = _pick_affinity(pending, board, left, affinity_max_skips)
        else:
            picked = next(((i, _by_strategy(strategy, c, board)) for i, t in enumerate(pending)
                           if (c := _candidates(t, board, left))), None)
        if picked is None:
            break
        index, backend_id = picked
        task = pending.pop(index)
        board.take(backend_id, task)
        pairs.append((task.id, backend_id))
    return pairs


def free_prompt_slots(backends: Sequence[BackendSlot], prefetch: int) -> int:
    """Prompts the healthy, accepting backends could take now, prefetch slots included."""
    return sum(max(0, 1 + prefetch - b.inflight) for b in backends if b.healthy and b.accepting)


def window_size(backends: Sequence[BackendSlot], prefetch: int, lookahead: int) -> int:
    """How many queued tasks a round reads: enough to fill every free slot, plus ``lookahead`` more that may go
    ahead of tasks that cannot run yet (or, with affinity, of tasks whose models are loaded nowhere)."""
    return free_prompt_slots(backends, prefetch) + lookahead


def skipped_by(window: Sequence[QueuedTask], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Tasks of the window that a later task of the same level overtook: their skip counts go up."""
    chosen = {task_id for task_id, _ in pairs}
    overtaken = []
    for index, task in enumerate(window):
        if task.id in chosen:
            continue
        if any(later.id in chosen and later.priority == task.priority for later in window[index + 1:]):
            overtaken.append(task.id)
    return overtaken
