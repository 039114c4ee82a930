"""Log output: JSON lines carry the task, backend and prompt of a message as fields."""
from __future__ import annotations

import json

from loguru import logger

from comfyart.cli.logs import configure_logging


def test_json_lines_carry_the_fields_of_their_message(capsys):
    try:
        configure_logging("info", "json")
        logger.info("task completed task={} backend={} prompt={} outputs={}", "T1", "static:a", "p-1", 2)
        logger.debug("not at info level task={}", "T2")
    finally:
        configure_logging("info")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    record = lines[0]["record"]
    assert record["message"] == "task completed task=T1 backend=static:a prompt=p-1 outputs=2"
    assert {k: record["extra"][k] for k in ("task", "backend", "prompt", "outputs")} == {
        "task": "T1", "backend": "static:a", "prompt": "p-1", "outputs": "2"}
    assert record["level"]["name"] == "INFO"


def test_text_lines_stay_plain(capsys):
    configure_logging("info")
    logger.info("task requeued task={}", "T3")
    err = capsys.readouterr().err
    assert "INFO    task requeued task=T3" in err and not err.lstrip().startswith("{")
