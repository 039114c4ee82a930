"""Command line: ``comfyart serve --config FILE``."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

from loguru import logger

from . import __version__
from .config import load_settings
from .errors import ConfigError


class _InterceptHandler(logging.Handler):
    """Sends stdlib logging (uvicorn, asyncio) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: "str | int" = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(),
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)


def _fast_loop_factory() -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop when it is installed (it is in requirements.txt): it roughly halves the cost of each socket
    operation, and the daemon is a few thousand of those per second under load."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyart", description="Elastic scheduler for ComfyUI fleets")
    parser.add_argument("--version", action="version", version=f"comfyart {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon: REST API, pool, dispatcher, tracker")
    serve.add_argument("--config", type=Path, help="YAML configuration file (default: built-in defaults)")
    serve.add_argument("--log-level", default=os.environ.get("COMFYART_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)

    configure_logging(args.log_level)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return 2
    from .daemon import run  # imported late: argument errors should not pay for docker and uvicorn imports

    try:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            runner.run(run(settings))
    except ConfigError as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
