"""A task record as Redis holds it (a hash of strings, JSON for the structured fields), and as a task event
publishes it. A new record holds only what differs from the defaults: a queue can hold millions."""
from __future__ import annotations

import json
from typing import Any

from comfyart.bus import Event
from comfyart.models import Task, TaskStatus

JSON_FIELDS = ("prompt", "outputs", "node_errors", "params", "history", "requires", "extra_data", "comfy_outputs",
               "comfy_messages", "webhook_deliveries", "comfy_targets", "needs", "labels")
INT_FIELDS = ("created_ms", "updated_ms", "started_ms", "finished_ms", "node_step", "node_max", "attempts",
              "workflow_version", "submitted_ms", "priority", "vram_mb", "cancel_asked_ms", "expired_ms")
FLOAT_FIELDS = ("progress", "number")
# what a task event leaves out: large, and in the record for whoever needs it
UNPUBLISHED = frozenset({"prompt", "params", "history", "extra_data", "comfy_outputs", "comfy_messages",
                         "comfy_targets", "node_errors", "webhook_deliveries", "needs"})
DELETE = "\0"  # a field value that removes the field

# Lua: write ARGV[first..last] (field, value pairs; a value of "\0", DELETE, removes the field) into a record
WRITE_FIELDS = """
local function write_fields(task_key, first, last, now_ms)
  for j = first, last, 2 do
    if ARGV[j + 1] == '\\0' then redis.call('HDEL', task_key, ARGV[j])
    else redis.call('HSET', task_key, ARGV[j], ARGV[j + 1]) end
  end
  redis.call('HSET', task_key, 'updated_ms', now_ms)
end
"""


def encode(fields: dict[str, Any]) -> dict[str, str]:
    """Field values as the record keeps them; None becomes DELETE."""
    encoded = {}
    for key, value in fields.items():
        if value is None:
            encoded[key] = DELETE
        elif key in JSON_FIELDS:
            encoded[key] = json.dumps(value, separators=(",", ":"))
        else:
            encoded[key] = str(value.value if isinstance(value, TaskStatus) else value)
    return encoded


def field_args(fields: dict[str, Any]) -> list[str]:
    """``field, value, field, value, ...`` as the Lua scripts take them."""
    return [part for pair in encode(fields).items() for part in pair]


def decode(task_id: str, raw: dict[str, str]) -> Task:
    # the id is in the record's key, and updated_ms starts at created_ms
    record: dict[str, Any] = {"id": task_id, "updated_ms": raw["created_ms"], **raw}
    for key in JSON_FIELDS:
        if key in record:
            record[key] = json.loads(record[key])
    for key in INT_FIELDS:
        if key in record:
            record[key] = int(record[key])
    for key in FLOAT_FIELDS:
        if key in record:
            record[key] = float(record[key])
    return Task.model_validate(record)


def task_event(task_id: str, status: TaskStatus, previous: TaskStatus | None, client_id: str | None,
               fields: dict[str, Any], owner: str | None = None) -> Event:
    """The ``task`` event of a change: its status before and after, and the fields it wrote (large ones left
    out)."""
    event: Event = {"type": "task", "id": task_id, "status": status.value,
                    "previous": previous.value if previous else None}
    if client_id:
        event["client_id"] = client_id
    if owner:
        event["owner"] = owner
    for key, value in fields.items():
        if key not in UNPUBLISHED:
            event[key] = value.value if isinstance(value, TaskStatus) else value
    return event
