"""comfyart's error tree; adapters translate library errors into it once, at their edge.

    ComfyartError
    ├── TransientError          retry later: StoreUnavailable, DockerUnavailable, BackendUnavailable
    ├── PermanentError          don't retry: PromptRejected, ContainerFailed, NotFound, InvalidTransition,
    │                           Conflict, StateConflict, InvalidInput, QuotaExceeded, Forbidden
    └── ConfigError             start-up only; the message names the field
"""
from __future__ import annotations

import math
from typing import Any


class ComfyartError(Exception):
    pass


class TransientError(ComfyartError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(TransientError):
    pass


class DockerUnavailable(TransientError):
    pass


class BackendUnavailable(TransientError):
    """The backend did not answer, or answered with something that is not ComfyUI's protocol."""


class PermanentError(ComfyartError):
    pass


class PromptRejected(PermanentError):
    """ComfyUI refused the graph at validation (HTTP 400)."""

    def __init__(self, error: Any, node_errors: Any) -> None:
        self.error = error
        self.node_errors = node_errors
        message = error.get("message", "prompt rejected") if isinstance(error, dict) else str(error)
        details = error.get("details") if isinstance(error, dict) else ""
        super().__init__(f"{message}: {details}" if details else message)


class ContainerFailed(PermanentError):
    def __init__(self, message: str, last_logs: str = "") -> None:
        super().__init__(message)
        self.last_logs = last_logs


class NotFound(PermanentError):
    pass


class InvalidTransition(PermanentError):
    pass


class Conflict(PermanentError):
    """A conditional write found another version than the one it expected."""


class StateConflict(PermanentError):
    """The request cannot apply in the current state (a name taken, a backend being removed)."""


class InvalidInput(PermanentError):
    """A request's content is refused; the message names the field at fault."""


class QuotaExceeded(PermanentError):
    """A client's quota refuses the request for now (HTTP 429). ``kind``: ``rate`` (too many requests a
    minute) or ``queue`` (too many tasks unfinished at once)."""

    def __init__(self, message: str, retry_after_s: float = 1.0, kind: str = "rate") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.kind = kind

    @property
    def retry_after(self) -> str:
        """The Retry-After header: whole seconds, rounded up, never 0."""
        return str(whole_seconds(self.retry_after_s))


def whole_seconds(seconds: float) -> int:
    """A wait as a client is told it: whole seconds, rounded up, never 0."""
    return max(1, math.ceil(seconds))


class Forbidden(PermanentError):
    """The caller's role does not allow the request (HTTP 403)."""


class Fenced(ComfyartError):
    """A write of a leader whose term is over: the fencing epoch in Redis moved on (another replica leads now).
    Neither transient nor a refusal of the request: the loop that made it stops and the replica steps down."""


class ConfigError(ComfyartError):
    pass
