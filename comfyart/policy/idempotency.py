"""Idempotency-Key of ``POST /api/v2/jobs`` (API-V2.md §7): the rules, without I/O (the store is
``store.idempotency``).

A key is single-use, reject-on-duplicate, never record-and-replay: the first request with a key claims it; any
later one with the same key (retry, concurrent duplicate, other body) is refused with 422
``idempotency_key_reuse`` and never executed. A claim is released only when the submission definitely failed
without making a job (invalid workflow, quota refused); it is held when the outcome is unknown. Keys expire 24 h
after their claim.

The stored value says what became of a claim:
    ``pending:<token>``  claimed, submission in progress (or its outcome unknown: a crash before the job was
                         recorded leaves it so until it expires, which the contract calls "held"); the token is
                         the claim's own, so releasing or binding an old claim never touches a newer one
    ``job:<task id>``    the submission made that job

Decision: a refusal names the job the key made (``details.job_id``) when there is one, so a client that lost the
answer to its first request finds its job without listing; ``details`` is null while that is unknown. Keys live in
their owner's namespace, so the job named is always the caller's own (with auth off every job is everyone's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_KEY_LENGTH = 255
KEY_TTL_S = 24 * 3600
PENDING_PREFIX = "pending:"
JOB_PREFIX = "job:"
REUSE_CODE = "idempotency_key_reuse"
REUSE_STATUS = 422
INVALID_KEY_CODE = "invalid_request"  # with status 400, as the reference proxy answers a bad key
INVALID_KEY_STATUS = 400


def valid_key(text: str) -> str | None:
    """None when ``text`` may be an Idempotency-Key: 1 to 255 printable ASCII characters (space to ``~``, as the
    SDK checks); else why not, in one line a client can act on."""
    if not text:
        return "Idempotency-Key must not be empty"
    if len(text) > MAX_KEY_LENGTH:
        return f"Idempotency-Key is {len(text)} characters long; at most {MAX_KEY_LENGTH} are allowed"
    for position, char in enumerate(text):
        if not " " <= char <= "~":
            return (f"Idempotency-Key may hold only printable ASCII characters; character {position + 1} is "
                    f"{char!r}")
    return None


def pending_value(token: str) -> str:
    return PENDING_PREFIX + token


def job_value(task_id: str) -> str:
    return JOB_PREFIX + task_id


@dataclass(frozen=True)
class Held:
    """What a key already claimed stands for."""

    job_id: str | None  # None: the submission is in progress, or its outcome is unknown


def held(value: str) -> Held:
    """The meaning of a stored value; a value of no known form counts as held with no job (refusing a reuse is the
    safe side)."""
    if value.startswith(JOB_PREFIX) and len(value) > len(JOB_PREFIX):
        return Held(job_id=value[len(JOB_PREFIX):])
    return Held(job_id=None)


def reuse_error(key_held: Held) -> dict[str, Any]:
    """The error envelope's ``error`` object for a reused key (status ``REUSE_STATUS``)."""
    if key_held.job_id is None:
        return {"code": REUSE_CODE, "message": "This Idempotency-Key was already used; its submission's outcome is "
                                               "not known yet: list your jobs instead of resubmitting.",
                "details": None}
    return {"code": REUSE_CODE, "message": f"This Idempotency-Key was already used for job {key_held.job_id}.",
            "details": {"job_id": key_held.job_id}}
