"""How the emulator is told to misbehave: ``Behaviour`` (set by CLI flags or ``POST /emulator/control``), the
``GARBAGE`` ways to answer like a broken or hostile backend, and the junk frames ``ws_junk`` sends.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# what ``garbage`` may hold: each makes one part of the server answer junk
GARBAGE = {
    "prompt_answer": "POST /prompt queues the prompt but answers HTML with status 200",
    "history": "/history answers invalid JSON with status 200",
    "deep_json": "/history answers JSON nested 100,000 deep",
    "ws_junk": "once a prompt starts, its socket gets junk frames: not JSON, wrong shapes, wrong types, "
               "odd ids, deep nesting, short binary frames",
    "huge_frame": "once a prompt starts, its socket gets one 65 MiB text frame",
    "view_hangs": "/view sends its headers, then a byte a second, never ending",
}
DEEP = 100_000
CLOSE_SOCKETS = object()  # an outbox entry that closes the sockets instead of sending a frame


@dataclass
class Behaviour:
    """Set with CLI flags or at run time through ``POST /emulator/control``: ``fail_node_types`` (raise in those
    node types), ``crash_on_prompt`` (exit the process when the next prompt starts), ``hang`` (the next node never
    finishes), ``drop_ws_after_start`` (close every socket once the next prompt has started), ``drop_prompt_answers``
    (queue the next N prompts but lose the answer), ``refuse_prompts`` (answer the next N prompts with HTTP 500,
    unqueued), ``refuse_uploads`` (the same for the next N image uploads), ``node_s`` and ``step_s`` (durations),
    and ``garbage``: a list of ways to misbehave like a broken or hostile backend (GARBAGE lists them)."""

    node_s: float = 0.0
    step_s: float = 0.02
    fail_node_types: list[str] = field(default_factory=list)
    crash_on_prompt: bool = False
    hang: bool = False
    drop_ws_after_start: bool = False
    model_load_s: float = 0.0
    drop_prompt_answers: int = 0  # queue the next N prompts but cut the connection instead of answering
    refuse_prompts: int = 0  # answer the next N POST /prompt with HTTP 500 without queueing them
    refuse_uploads: int = 0  # answer the next N POST /upload/image (or mask) with HTTP 500, storing nothing
    megapixel_s: float = 0.0  # compute time per megapixel a node outputs (a CPU ComfyUI spends ~0.03 s)
    garbage: list[str] = field(default_factory=list)  # keys of GARBAGE

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise KeyError(key)
            if key == "garbage" and not (isinstance(value, list) and set(value) <= set(GARBAGE)):
                raise KeyError(f"garbage: a list of {', '.join(GARBAGE)}")
            setattr(self, key, value)


def junk_frames(prompt_id: str) -> list[Any]:
    """What a broken backend might send on its socket in the middle of a prompt."""
    return [
        "this is not JSON",
        "[1, 2, 3]",
        json.dumps({"type": "progress", "data": "a string"}),
        json.dumps({"type": "progress", "data": {"prompt_id": ["a", "list"], "value": 1, "max": 2}}),
        json.dumps({"type": "progress", "data": {"prompt_id": {"a": "dict"}, "value": 1, "max": 2}}),
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "node": ["x"], "value": "lots",
                                                 "max": None}}),
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "node": "1", "value": 1e308, "max": 0}}),
        json.dumps({"type": "executing", "data": {"prompt_id": prompt_id, "node": {"not": "an id"}}}),
        json.dumps({"type": "execution_cached", "data": {"prompt_id": prompt_id, "nodes": "not a list"}}),
        json.dumps({"type": "executed", "data": {"prompt_id": prompt_id, "node": None, "output": "not a dict"}}),
        json.dumps({"type": "executed", "data": {"prompt_id": prompt_id, "node": "9",
                                                 "output": {"images": ["x", {"filename": 3}, None]}}}),
        json.dumps({"type": "execution_start", "data": {"prompt_id": "someone-else"}}),
        json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}),
        json.dumps({"type": None, "data": {}}),
        "[" * DEEP + "]" * DEEP,
        json.dumps({"type": "progress", "data": {"prompt_id": prompt_id, "deep": json.loads("[" * 500 + "]" * 500)}}),
        b"",
        b"\x00\x01\x02",
        b"\x00\x00\x00\x01\x00\x00\x00\x02not an image",
    ]
