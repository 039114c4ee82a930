"""Tasks put off for a while: a task whose input file is on a replica that does not answer (restarting in a rolling
upgrade, or dead) waits in the queue and is tried again later, on the backoff schedule, rather than failing for
good; past ``give_up_s`` of waiting it fails with the one line that says where its file is. Pure: time comes in."""
from __future__ import annotations

from dataclasses import dataclass, field

from comfyart.policy.backoff import Backoff

FILES_AWAY = Backoff(first_s=2.0, max_s=30.0)
FILES_AWAY_GIVE_UP_S = 600.0  # a replica down this long is not coming back soon: the task fails


@dataclass
class Deferrals:
    """task id -> (first put off at, times put off, not before); ``due`` asks whether a task may be tried now."""

    backoff: Backoff = FILES_AWAY
    give_up_s: float = FILES_AWAY_GIVE_UP_S
    waits: dict[str, tuple[float, int, float]] = field(default_factory=dict)

    def defer(self, task_id: str, now: float, rand: float) -> bool:
        """Put ``task_id`` off once more; False when it has waited ``give_up_s`` already (then it is forgotten)."""
        first, times, _ = self.waits.get(task_id, (now, 0, now))
        if now - first >= self.give_up_s:
            self.waits.pop(task_id, None)
            return False
        self.waits[task_id] = (first, times + 1, now + self.backoff.delay(times + 1, rand))
        return True

    def due(self, task_id: str, now: float) -> bool:
        wait = self.waits.get(task_id)
        return wait is None or now >= wait[2]

    def forget(self, task_id: str) -> None:
        """It ran (or left the queue): a later problem starts a new wait."""
        self.waits.pop(task_id, None)
