"""Logging, set up once by the command line: loguru to standard error, as text or JSON lines, with the
standard library's loggers (uvicorn, asyncio) sent through it."""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

from loguru import logger


class _InterceptHandler(logging.Handler):
    """Sends stdlib logging (uvicorn, asyncio) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


LOG_FIELD = re.compile(r"\b([a-z_]+)=([^\s=]+)")


def _fields_of_message(record: Any) -> None:
    """The ``key=value`` pairs every log line here is written with (``task=… backend=… prompt=…``), also as
    fields of the JSON record, so a log pipeline can filter by task, backend or prompt."""
    for key, value in LOG_FIELD.findall(record["message"]):
        record["extra"].setdefault(key, value)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Text lines, or one JSON object a line (loguru's own: message, level, time, and ``extra`` with the message's
    fields)."""
    logger.remove()
    if log_format == "json":
        logger.configure(patcher=_fields_of_message)
        logger.add(sys.stderr, level=level.upper(), serialize=True)
    else:
        logger.configure(patcher=None)
        logger.add(sys.stderr, level=level.upper(), format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)
