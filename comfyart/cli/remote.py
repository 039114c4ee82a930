"""The CLI's commands that talk to a running daemon over its REST API: submit (and wait), tasks, task, cancel, retry,
pool (and ``pool refresh``), models, workflows, status (health and replicas), drain (a backend, before it goes away:
``cli.drain``). ``--url`` (``COMFYART_URL``) and ``--key`` (``COMFYART_KEY``) say where and as whom; ``--json``
prints the daemon's JSON for scripts (``options``: before or after the command). Exit codes: 0 done, 1 the daemon
refused, the task did not complete or a backend did not answer its refresh (``drain``: still busy at its timeout),
2 bad arguments or no daemon to talk to (``drain``: or no such backend), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from comfyart.cli import drain
from comfyart.cli.answers import CommandFailed
from comfyart.cli.answers import answer as _answer
from comfyart.cli.options import PLACEMENT, add_remote_options
from comfyart.cli.render import (
    inventory_line,
    models_table,
    node_error_lines,
    pool_lines,
    printable,
    progress_line,
    status_lines,
    task_lines,
    task_table,
    workflow_table,
)
from comfyart.workflows.definition import Workflow, WorkflowDefinition

FINAL = ("completed", "failed", "canceled")
SHOWN_ONLY = frozenset(Workflow.model_fields) - frozenset(WorkflowDefinition.model_fields) | {"versions"}
HIDDEN_REPLICAS = {401: "replicas: an admin key sees them (--key)", 403: "replicas: an admin key sees them (--key)",
                   404: "replicas: this daemon keeps no registry of them"}
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text, epilog=PLACEMENT)
        add_remote_options(parser)
        return parser

    submit = remote("submit", "queue a workflow run or a raw graph; --wait follows it to the end")
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--workflow", help="a stored workflow's name")
    what.add_argument("--prompt", type=Path, help="a ComfyUI API-format graph (JSON file; '-': standard input)")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a workflow parameter; VALUE is JSON when it parses (5, true, \"x\"), else text; "
                             "@FILE uploads an image")
    submit.add_argument("--priority", help="high, normal, low or -100..100")
    submit.add_argument("--wait", action="store_true", help="follow it to the end, then download its outputs")
    submit.add_argument("--output-dir", type=Path, default=Path("."), help="where --wait puts the outputs")
    tasks = remote("tasks", "list tasks, newest first")
    tasks.add_argument("--status", choices=["pending", "running", "completed", "failed", "canceled"],
                       help="only the tasks in this status")
    tasks.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    task = remote("task", "one task's record")
    task.add_argument("task_id")
    cancel = remote("cancel", "cancel a queued or running task")
    cancel.add_argument("task_id")
    retry = remote("retry", "queue an ended task again as a new task (same graph, or workflow version and "
                            "parameters); --wait follows it")
    retry.add_argument("task_id")
    retry.add_argument("--wait", action="store_true", help="follow it to the end, then download its outputs")
    retry.add_argument("--output-dir", type=Path, default=Path("."), help="where --wait puts the outputs")
    pool_parser = remote("pool", "the pool: hosts, backends (with their inventories), autoscaler; "
                                 "'pool refresh [ID]' reads inventories again")
    pool_actions = pool_parser.add_subparsers(dest="pool_command", metavar="{refresh}")
    refresh = pool_actions.add_parser("refresh", help="read the inventories of every healthy backend (or of ID) now",
                                      description="read the inventories of every healthy backend (or of ID) now",
                                      epilog=PLACEMENT)
    add_remote_options(refresh)
    refresh.add_argument("backend", nargs="?", metavar="ID", help="one backend's id (comfyart pool lists them)")
    models = remote("models", "the fleet's model files, each with its kind and the backends that hold it")
    models.add_argument("--backend", help="only the models this backend holds (admin)")
    models.add_argument("--find", default="", help="only models whose name holds this text (any case)")
    workflows = remote("workflows", "stored workflows: list, show, put, rm")
    actions = workflows.add_subparsers(dest="workflow_command", required=True, metavar="{list,show,put,rm}")
    for action, action_help in (("list", "each workflow's name, version and parameters"),
                                ("show", "one workflow's definition, as JSON"),
                                ("put", "create or replace one from a JSON file {graph, params, ...} (admin)"),
                                ("rm", "delete one (admin)")):
        parser = actions.add_parser(action, help=action_help, description=action_help, epilog=PLACEMENT)
        add_remote_options(parser)
        if action != "list":
            parser.add_argument("name", help="the workflow's name")
        if action == "put":
            parser.add_argument("file", type=Path, help="its definition, JSON")
    remote("status", "the daemon's health, and its replicas: which leads, epoch, versions, heartbeats (admin)")
    drain.add_command(remote("drain", drain.HELP))


REMOTE_COMMANDS = ("submit", "tasks", "task", "cancel", "retry", "pool", "models", "workflows", "status", "drain")


def run(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=60) as client:
            return COMMANDS[args.command](client, args)
    except CommandFailed as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return exc.code
    except httpx.InvalidURL as exc:
        print(f"comfyart: --url {args.url}: {exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        print(f"comfyart: cannot reach the daemon at {args.url}: {exc or type(exc).__name__} (is 'comfyart serve' "
              "running there? --url or COMFYART_URL names another)", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------- helpers
def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def param_value(raw: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → (name, value): JSON when VALUE parses as JSON, else the text; ``@FILE`` stays a path."""
    name, sep, value = raw.partition("=")
    if not sep or not name:
        raise CommandFailed(f"--param {raw!r}: write NAME=VALUE", code=2)
    if value.startswith("@"):
        return name, Path(value[1:])
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def definition_of(document: Any) -> Any:
    """What ``workflows put`` sends of a JSON file: all of it, less the fields the daemon adds to a stored workflow,
    so that what ``workflows show`` printed goes back as it is (a copy under another name, an edited version)."""
    if not isinstance(document, dict):
        return document
    return {key: value for key, value in document.items() if key not in SHOWN_ONLY}


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a Server-Sent Events stream; comments are skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


# ---------------------------------------------------------------------------------------------------- commands
def submit(client: httpx.Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.priority is not None:
        options["priority"] = int(args.priority) if args.priority.lstrip("-").isdigit() else args.priority
    if args.prompt is not None:
        if args.param:
            raise CommandFailed("--param applies to --workflow; a graph carries its own values", code=2)
        try:
            text = sys.stdin.read() if str(args.prompt) == "-" else args.prompt.read_text()
            graph = json.loads(text)
        except OSError as exc:
            raise CommandFailed(f"--prompt {args.prompt}: cannot read it: {reason(exc)}", code=2) from None
        except ValueError as exc:
            raise CommandFailed(f"--prompt {args.prompt}: not JSON: {exc}", code=2) from None
        created = _answer(client.post("/api/tasks", json={"prompt": graph.get("prompt", graph), **options}))
    else:
        params = dict(param_value(raw) for raw in args.param)
        files = {name: value for name, value in params.items() if isinstance(value, Path)}
        if files:
            opened = {}
            for name, path in files.items():
                try:
                    opened[name] = (path.name, path.read_bytes(),
                                    mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                except OSError as exc:
                    raise CommandFailed(f"--param {name}=@{path}: cannot read it: {reason(exc)}", code=2) from None
            form = {"params": json.dumps({k: v for k, v in params.items() if k not in files}),
                    **{k: str(v) for k, v in options.items()}}
            response = client.post(f"/api/workflows/{quote(args.workflow)}/run", data=form, files=opened)
        else:
            response = client.post(f"/api/workflows/{quote(args.workflow)}/run", json={"params": params, **options})
        created = _answer(response)
    return _queued(client, args, created)


def _queued(client: httpx.Client, args: argparse.Namespace, created: dict[str, Any]) -> int:
    """A task just queued: its id, or with --wait its end and its downloaded outputs."""
    task_id = created["id"]
    if not args.wait:
        _print(args, created, task_id)
        return 0
    try:
        task = follow(client, task_id, show=not args.json)
    except KeyboardInterrupt:
        raise CommandFailed(f"interrupted; task {task_id} goes on ('comfyart cancel {task_id}' stops it)",
                            code=INTERRUPTED) from None
    paths = download(client, task, args.output_dir) if task["status"] == "completed" else []
    if args.json:
        print(json.dumps({**task, "downloaded": [str(p) for p in paths]}, indent=2))
    else:
        for path in paths:
            print(path)
        if task["status"] != "completed":
            print(f"comfyart: task {task_id} {task['status']}: {printable(task.get('error') or '')}".rstrip(": "),
                  file=sys.stderr)
            for line in node_error_lines(task.get("node_errors")):
                print(line, file=sys.stderr)
    return 0 if task["status"] == "completed" else 1


def follow(client: httpx.Client, task_id: str, *, show: bool) -> dict[str, Any]:
    """Follow a task's events to its end (a progress bar on standard error); returns its final record."""
    tty = show and sys.stderr.isatty()
    record: dict[str, Any] = {}
    last = ""
    with client.stream("GET", f"/api/tasks/{task_id}/events", timeout=httpx.Timeout(60, read=None)) as stream:
        if stream.status_code >= 300:
            stream.read()
            _answer(stream)
        for event, data in sse_events(stream.iter_lines()):
            if event in ("task", "progress"):
                record.update({k: v for k, v in data.items() if k not in ("type", "snapshot", "previous")})
            line = progress_line(record)
            if show and line != last:
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                last = line
            if event == "lagged" or record.get("status") in FINAL:
                break
    if tty:
        print(file=sys.stderr)
    final: dict[str, Any] = _answer(client.get(f"/api/tasks/{task_id}"))
    return final


def download(client: httpx.Client, task: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in task.get("outputs") or []:
        name = Path(output["filename"]).name  # the daemon's names are plain already; never trust a path
        target = directory / f"{task['id']}_{name}"
        with client.stream("GET", f"/api/tasks/{task['id']}/outputs/{quote(output['filename'])}",
                           follow_redirects=True) as response:
            if response.status_code >= 300:
                response.read()
                _answer(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        paths.append(target)
    return paths


def reason(exc: OSError) -> str:
    """Why a file could not be read, as ``ls`` would say it ("no such file or directory"), without Python's
    ``[Errno 2]``."""
    return (exc.strerror or str(exc)).lower()


def tasks(client: httpx.Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    listing = _answer(client.get("/api/tasks", params=params))
    rows = task_table(listing["tasks"]) if listing["tasks"] else []
    _print(args, listing, "\n".join(rows + [f"({len(listing['tasks'])} of {listing['total']})"]))
    return 0


def task(client: httpx.Client, args: argparse.Namespace) -> int:
    record = _answer(client.get(f"/api/tasks/{quote(args.task_id)}"))
    _print(args, record, "\n".join(task_lines(record)))
    return 0


def cancel(client: httpx.Client, args: argparse.Namespace) -> int:
    record = _answer(client.delete(f"/api/tasks/{quote(args.task_id)}"))
    _print(args, record, f"{record['id']} {record['status']}")
    return 0


def retry(client: httpx.Client, args: argparse.Namespace) -> int:
    return _queued(client, args, _answer(client.post(f"/api/tasks/{quote(args.task_id)}/retry")))


def pool(client: httpx.Client, args: argparse.Namespace) -> int:
    if getattr(args, "pool_command", None) == "refresh":
        return refresh(client, args)
    described = _answer(client.get("/api/pool"))
    _print(args, described, "\n".join(pool_lines(described)))
    return 0


def refresh(client: httpx.Client, args: argparse.Namespace) -> int:
    """``pool refresh [ID]``: one backend's inventory read now (its summary), or every healthy backend's (a line
    each, and one a backend that did not answer: exit 1)."""
    if args.backend:
        backend = _answer(client.post(f"/api/pool/backends/{quote(args.backend, safe='')}/refresh"))
        _print(args, backend, f"{backend['id']}: {inventory_line(backend['inventory'])}")
        return 0
    described = _answer(client.post("/api/pool/refresh"))
    failed = described.get("failed") or {}
    lines = [f"{b['id']}: {inventory_line(b['inventory'])}" for b in described["backends"] if b["id"] not in failed]
    lines += [f"{backend_id}: not read: {printable(why)}" for backend_id, why in failed.items()]
    _print(args, described, "\n".join(lines + [f"({described['refreshed']} read, {len(failed)} failed)"]))
    return 1 if failed else 0


def models(client: httpx.Client, args: argparse.Namespace) -> int:
    params = {key: value for key, value in (("backend", args.backend), ("q", args.find)) if value}
    listing = _answer(client.get("/api/models", params=params))
    rows = models_table(listing["models"]) if listing["models"] else ["(no models)"]
    notes = [f"{len(listing[key])} backend(s) {what}: {', '.join(listing[key])}"
             for key, what in (("unread", "not read yet"), ("unlisted", "list nothing")) if listing.get(key)]
    _print(args, listing, "\n".join(rows + notes))
    return 0


def workflows(client: httpx.Client, args: argparse.Namespace) -> int:
    command = args.workflow_command
    if command == "list":
        listing = _answer(client.get("/api/workflows"))
        rows = workflow_table(listing["workflows"]) if listing["workflows"] else ["(no workflows)"]
        _print(args, listing, "\n".join(rows))
    elif command == "show":
        print(json.dumps(_answer(client.get(f"/api/workflows/{quote(args.name)}")), indent=2))
    elif command == "put":
        try:
            definition = json.loads(args.file.read_text())
        except OSError as exc:
            raise CommandFailed(f"{args.file}: cannot read it: {reason(exc)}", code=2) from None
        except ValueError as exc:
            raise CommandFailed(f"{args.file}: not JSON: {exc}", code=2) from None
        result = _answer(client.put(f"/api/workflows/{quote(args.name)}", json=definition_of(definition)))
        _print(args, result, f"{result['name']} version {result['version']}"
                             + ("" if result["changed"] else " (unchanged)"))
    else:
        response = client.delete(f"/api/workflows/{quote(args.name)}")
        _answer(response)
        _print(args, {"name": args.name, "deleted": True}, f"{args.name} deleted")
    return 0


def status(client: httpx.Client, args: argparse.Namespace) -> int:
    """``/healthz`` and, for an admin key, ``/api/cluster``; exit 1 when the daemon is unhealthy (503)."""
    health = _answer(client.get("/healthz"))
    response = client.get("/api/cluster")
    hidden = HIDDEN_REPLICAS.get(response.status_code)
    cluster = None if hidden else _answer(response)
    _print(args, {"health": health, "cluster": cluster}, "\n".join(status_lines(health, cluster, hidden)))
    return 0


COMMANDS = {"submit": submit, "tasks": tasks, "task": task, "cancel": cancel, "retry": retry, "pool": pool,
            "models": models, "workflows": workflows, "status": status, "drain": drain.drain}
