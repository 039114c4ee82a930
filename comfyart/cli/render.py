"""The daemon's records as the text the CLI prints: pure functions of the JSON it answered. Whatever a backend
wrote (ComfyUI's error messages) is shown on one line each, with control characters escaped, so that it cannot
move the cursor or recolour the terminal."""
from __future__ import annotations

import re
from typing import Any

BAR_WIDTH = 30
MIB = 1 << 20
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """``value`` as text on one line: control characters (newlines included) as escapes."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))


def progress_line(task: dict[str, Any]) -> str:
    done = max(0.0, min(1.0, float(task.get("progress") or 0.0)))
    filled = round(done * BAR_WIDTH)
    where = f" node {task['node']}" if task.get("node") else ""
    if task.get("node_max"):
        where += f" {task.get('node_step') or 0}/{task['node_max']}"
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done * 100:5.1f}% {task.get('status', '')}{where}"


def task_lines(record: dict[str, Any]) -> list[str]:
    """``comfyart task ID``: the record's main fields, its progress, its outputs and ComfyUI's node errors."""
    lines = [f"{key}: {printable(record[key])}" for key in ("id", "status", "workflow", "backend", "attempts",
                                                             "error") if record.get(key) is not None]
    lines.append(progress_line(record))
    lines += [f"output: {o['filename']} ({o['size']} bytes, {o['content_type']})" for o in record.get("outputs") or []]
    return lines + node_error_lines(record.get("node_errors"))


def node_error_lines(node_errors: Any) -> list[str]:
    """ComfyUI's ``node_errors`` (``{node id: {class_type, errors: [{message, details, …}], dependent_outputs}}``)
    as its own console prints them: ``* CLASS ID:`` then ``  - MESSAGE: DETAILS`` per error. A backend wrote them:
    any part of an odd shape is shown as it came, never a crash."""
    if not node_errors or not isinstance(node_errors, dict):
        return []
    lines = ["node errors:"]
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {"errors": [entry]}
        outputs = entry.get("dependent_outputs")
        affects = f" (output {', '.join(map(printable, outputs))})" if isinstance(outputs, list) and outputs else ""
        lines.append(f"* {printable(entry.get('class_type') or '?')} {printable(node_id)}{affects}:")
        errors = entry.get("errors")
        for error in errors if isinstance(errors, list) else [errors]:
            lines.append(f"  - {_error_text(error)}")
    return lines


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return printable(error)
    message, details = error.get("message") or error.get("type") or "error", error.get("details")
    return printable(f"{message}: {details}" if details not in (None, "") else message)


def pool_lines(described: dict[str, Any]) -> list[str]:
    """``comfyart pool``: a line a host, a line a backend, then the queue and the autoscaler's last decision."""
    lines = []
    for host in described.get("hosts") or []:
        down = f"  down: {printable(host['down'])}" if host.get("down") else ""
        lines.append(f"host {host['name']} ({host['kind']})  backends {host['containers']}  "
                     f"free slots {host['free_slots']}{down}")
    for backend in described.get("backends") or []:
        lines.append(backend_line(backend))
    decision = described.get("autoscaler") or {}
    lines.append(f"queue {described.get('queue_length', 0)}; autoscaler: {decision.get('reason', 'no decision yet')}")
    return lines


def backend_line(backend: dict[str, Any]) -> str:
    line = (f"{backend['id']:<28} {backend['status']:<10} {backend['mode']:<9} inflight {backend['inflight']}  "
            f"done {backend['tasks_done']}")
    if backend.get("gpu") is not None:
        line += f"  gpu {backend['gpu']}"
    if backend.get("vram_total"):
        line += f"  vram free {(backend.get('vram_free') or 0) // MIB} of {backend['vram_total'] // MIB} MiB"
    if backend.get("error"):
        line += f"  error: {printable(backend['error'])}"
    return line
