"""The daemon's records as the text the CLI prints: pure functions of the JSON it answered. Whatever a backend
wrote (ComfyUI's error messages) is shown on one line each, with control characters escaped, so that it cannot
move the cursor or recolour the terminal."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

BAR_WIDTH = 30
PROMPT_WIDTH = 60  # of a prompt in a listing: enough to tell tasks apart on one line
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


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """``rows`` under ``header`` in columns as wide as their widest cell (as ``docker ps`` prints them), each cell on
    one line; the last column is not padded."""
    cells = [[printable(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in cells]


def shortened(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def task_table(tasks: Sequence[dict[str, Any]]) -> list[str]:
    """``comfyart tasks``: a row a task, with its prompt (``prompt_text``) to tell tasks apart."""
    return table(["ID", "STATUS", "PROGRESS", "WORKFLOW", "BACKEND", "PROMPT"],
                 [[t["id"], t["status"], f"{round((t.get('progress') or 0) * 100)}%", t.get("workflow") or "graph",
                   t.get("backend") or "-", shortened(printable(t.get("prompt_text") or ""), PROMPT_WIDTH)]
                  for t in tasks])


def workflow_table(workflows: Sequence[dict[str, Any]]) -> list[str]:
    """``comfyart workflows list``: name, version, parameters."""
    return table(["NAME", "VERSION", "PARAMETERS"],
                 [[w["name"], f"v{w['version']}", ", ".join(w.get("params") or {})] for w in workflows])


def task_lines(record: dict[str, Any]) -> list[str]:
    """``comfyart task ID``: the record's main fields (what it draws, with which parameters), its progress, its
    outputs and ComfyUI's node errors."""
    params = json.dumps(record["params"], ensure_ascii=False) if record.get("params") else None
    fields = {"id": record.get("id"), "status": record.get("status"), "workflow": record.get("workflow"),
              "prompt": record.get("prompt_text"), "params": params, "backend": record.get("backend"),
              "attempts": record.get("attempts"), "error": record.get("error")}
    lines = [f"{key}: {printable(value)}" for key, value in fields.items() if value not in (None, "")]
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
        if backend.get("inventory"):
            lines.append("    " + inventory_line(backend["inventory"]))
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


def inventory_line(summary: dict[str, Any]) -> str:
    """A backend's inventory summary (``/api/pool``): its counts and what no backend of another inventory has."""
    if not summary.get("read"):
        problem = summary.get("error")
        return "inventory: not read yet" + (f" ({printable(problem)})" if problem else "")
    if not summary.get("listed", True):
        return "inventory: lists nothing (not a ComfyUI with /object_info): it checks each prompt itself"
    line = (f"inventory: {summary['nodes']} node classes, {summary['models']} models, "
            f"{summary['embeddings']} embeddings")
    if summary.get("shared_with"):
        line += f" (as {summary['shared_with']} other backend(s))"
    only = summary.get("only_here") or {}
    alone = [*_capped(only.get("models"), only.get("more_models"), "models"),
             *_capped(only.get("nodes"), only.get("more_nodes"), "node classes")]
    if alone:
        line += "; only here: " + ", ".join(alone)
    if summary.get("error"):
        line += f"; last read failed: {printable(summary['error'])}"
    return line


def _capped(names: Any, more: Any, plural: str) -> list[str]:
    shown = [printable(name) for name in names or []]
    return shown + ([f"{more} more {plural}"] if more else [])


def models_table(models: Sequence[dict[str, Any]]) -> list[str]:
    """``comfyart models``: a row a model file, with its folders and where it is (an admin: the backends and their
    states; a client: how many hold it)."""
    def where(model: dict[str, Any]) -> str:
        if "backends" not in model:
            return f"{model['held_by']} backend(s), {model['healthy']} healthy"
        return ", ".join(b["id"] if b["status"] == "healthy" and b["mode"] == "active"
                         else f"{b['id']} ({b['status'] if b['status'] != 'healthy' else b['mode']})"
                         for b in model["backends"])
    return table(["MODEL", "KIND", "WHERE"], [[m["name"], ",".join(m["kinds"]), where(m)] for m in models])


def age(ms: int) -> str:
    """A duration for people: 450ms, 3.2s, 4m 10s, 2h 5m, 3d 4h."""
    ms = max(0, ms)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller_size}{smaller}"
    return f"{seconds // 60}m {seconds % 60}s"


def status_lines(health: dict[str, Any] | None, cluster: dict[str, Any] | None, hidden: str | None = None) -> list[str]:
    """``comfyart status``: the daemon's health (``/healthz``), then its replicas (``/api/cluster``; None: not
    shown, ``hidden`` says why)."""
    lines = []
    if health is not None:
        lines.append(f"daemon {health.get('status', '?')}  backends {health.get('backends', 0)} "
                     f"({health.get('healthy_backends', 0)} healthy)  queue {health.get('queue_length', 0)}")
    if cluster is None:
        return [*lines, hidden or "replicas: not shown"]
    return [*lines, *cluster_lines(cluster)]


def cluster_lines(cluster: dict[str, Any]) -> list[str]:
    """The leader (its epoch and since when), then a row a replica: name (``*``: the one answering), role as it
    believes, version, heartbeat age, address, and a note when its fleet configuration differs from the leader's.
    Ages are counted against the answering replica's clock (``now_ms``), not this machine's."""
    now = int(cluster.get("now_ms") or 0)
    leader = cluster.get("leader")
    if leader:
        since = leader.get("since") or leader.get("since_ms")
        lines = [f"leader {printable(leader['name'])}  epoch {leader['epoch']}  since {since} "
                 f"({age(now - int(leader['since_ms']))} ago)"]
    else:
        lines = ["leader none: no replica holds the lease now"]
    rows = []
    for replica in cluster.get("replicas") or []:
        name = replica["name"] + (" *" if replica["name"] == cluster.get("replica") else "")
        note = ""
        if replica.get("config_differs"):
            note = "config differs: " + (", ".join(replica.get("differing_sections") or []) or "?")
        role = replica.get("role", "?") + ("" if replica.get("leader") or replica.get("role") != "leader"
                                           else " (no lease)")
        rows.append([name, role, replica.get("version", "?"), f"{age(now - int(replica['heartbeat_ms']))} ago",
                     replica.get("url", ""), note])
    lines += table(["REPLICA", "ROLE", "VERSION", "HEARTBEAT", "URL", ""], rows) if rows else ["(no replicas)"]
    return lines
