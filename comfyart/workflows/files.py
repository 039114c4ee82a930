"""Workflow files loaded at start-up from the configured directory, next to what the API stored.

Per workflow NAME the directory holds:
    NAME-api.json       the API-format graph ("Export (API)" in ComfyUI); required
    NAME.json           the UI-format graph, kept beside it; optional
    NAME.params.yaml    the parameter map and a description; optional (without it the workflow takes none)
A NAME.json with no NAME-api.json beside it is taken as the API graph when it is one. A file that cannot be read
or does not validate is reported by name and skipped; the others still load.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from loguru import logger
from pydantic import ValidationError

from comfyart.config.settings import describe_validation_error
from comfyart.errors import Conflict
from comfyart.store.workflows import WorkflowStore
from comfyart.workflows.definition import (
    FileLoad,
    WorkflowDefinition,
    definition_problems,
    file_load_action,
    workflow_name_problem,
)

API_SUFFIX = "-api.json"
PARAMS_SUFFIXES = (".params.yaml", ".params.yml")


@dataclass
class WorkflowFile:
    name: str
    definition: WorkflowDefinition
    source: str  # the graph's file name
    mtime_ms: int


@dataclass
class _Parts:
    graph: Path | None = None
    ui: Path | None = None
    params: Path | None = None
    plain: Path | None = None  # NAME.json: the UI graph beside NAME-api.json, or else maybe the API graph


@dataclass
class LoadReport:
    counts: dict[FileLoad, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc


def _group(directory: Path) -> dict[str, _Parts]:
    groups: dict[str, _Parts] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = path.name
        if name.endswith(API_SUFFIX):
            groups.setdefault(name[: -len(API_SUFFIX)], _Parts()).graph = path
        elif name.endswith(PARAMS_SUFFIXES):
            groups.setdefault(name.rsplit(".params.", 1)[0], _Parts()).params = path
        elif name.endswith(".json"):
            groups.setdefault(name[: -len(".json")], _Parts()).plain = path
    return groups


def _definition(name: str, parts: _Parts) -> tuple[WorkflowDefinition, Path]:
    """Raises ValueError("FILE: why") for the first file at fault."""
    ui = None
    if parts.graph is not None:
        graph_path = parts.graph
        if parts.plain is not None:
            ui = _read_named(parts.plain)
            if not isinstance(ui, dict):
                raise ValueError(f"{parts.plain.name}: a UI-format graph is a JSON object")
    elif parts.plain is not None:
        graph_path = parts.plain
    else:
        assert parts.params is not None
        raise ValueError(f"{parts.params.name}: no {name}{API_SUFFIX} beside it")
    graph = _read_named(graph_path)
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):
        raise ValueError(f"{graph_path.name}: this is ComfyUI's UI format; export the workflow with "
                         f"'Export (API)' as {name}{API_SUFFIX} (the UI file may stay beside it)")
    meta: Any = {}
    if parts.params is not None:
        try:
            meta = yaml.safe_load(parts.params.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{parts.params.name}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(meta, dict) or set(meta) - {"description", "params"}:
            raise ValueError(f"{parts.params.name}: expected a mapping with 'description' and 'params'")
    where = parts.params.name if parts.params is not None else graph_path.name
    try:
        definition = WorkflowDefinition(graph=graph, ui=ui, **meta)
    except ValidationError as exc:
        raise ValueError(f"{where}: {describe_validation_error(exc)}") from exc
    problems = definition_problems(definition)
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
    return definition, graph_path


def _read_named(path: Path) -> Any:
    try:
        return _read_json(path)
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from exc


def read_workflow_dir(directory: Path) -> tuple[list[WorkflowFile], list[str]]:
    """Every workflow the directory defines, and one message per file skipped."""
    try:
        groups = _group(directory)
    except OSError as exc:
        return [], [f"{directory}: cannot read the workflow directory: {exc.strerror}"]
    found, errors = [], []
    for name, parts in groups.items():
        try:
            problem = workflow_name_problem(name)
            if problem is not None:
                first = parts.graph or parts.plain or parts.params
                raise ValueError(f"{first.name if first else name}: {problem}")
            definition, graph_path = _definition(name, parts)
            files = [p for p in (parts.graph, parts.plain, parts.params) if p is not None]
            mtime_ms = max(int(p.stat().st_mtime * 1000) for p in files)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        except OSError as exc:
            errors.append(f"{exc.filename or name}: cannot read: {exc.strerror}")
            continue
        found.append(WorkflowFile(name, definition, f"file:{graph_path.name}", mtime_ms))
    return found, errors


async def load_workflow_files(directory: Path, store: WorkflowStore) -> LoadReport:
    """Bring the directory's workflows into the store without overwriting newer edits made through the API."""
    found, errors = await asyncio.to_thread(read_workflow_dir, directory)
    report = LoadReport(errors=errors)
    for error in errors:
        logger.error("workflow file skipped error={}", error)
    for item in found:
        meta = await store.current(item.name)
        action = file_load_action(stored_sha=meta["sha"] if meta else None,
                                  stored_updated_ms=int(meta["updated_ms"]) if meta else None,
                                  file_sha=item.definition.content_sha(), file_mtime_ms=item.mtime_ms)
        if action in (FileLoad.CREATE, FileLoad.REPLACE):
            expected = int(meta["version"]) if meta else 0
            try:
                await store.put(item.name, item.definition, source=item.source, expected_version=expected)
            except Conflict:
                action = FileLoad.KEEP_STORED  # written through the API meanwhile: that edit is newer
        if action is FileLoad.KEEP_STORED:
            logger.info("workflow file older than the stored version, kept the stored one workflow={}", item.name)
        report.counts[action] = report.counts.get(action, 0) + 1
    logger.info("workflow files loaded directory={} {} skipped={}", directory,
                " ".join(f"{action}={count}" for action, count in sorted(report.counts.items())), len(errors))
    return report
