"""Command line: ``comfyart serve --config FILE``; ``comfyart keys create|list|revoke`` for API keys (in Redis);
``submit``, ``tasks``, ``task``, ``cancel``, ``pool``, ``workflows`` against a running daemon (``remote``)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from comfyart import __version__
from comfyart.cli import remote
from comfyart.cli.logs import configure_logging
from comfyart.config.settings import Settings, load_settings
from comfyart.errors import ConfigError, NotFound, StoreUnavailable


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (it is in requirements.txt): it roughly halves the cost of each socket
    operation, and the daemon is a few thousand of those per second under load."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyart", description="Elastic scheduler for ComfyUI fleets")
    parser.add_argument("--version", action="version", version=f"comfyart {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon: REST API, pool, dispatcher, tracker")
    config_default = Path(os.environ["COMFYART_CONFIG"]) if os.environ.get("COMFYART_CONFIG") else None
    serve.add_argument("--config", type=Path, default=config_default,
                       help="YAML configuration file (default: $COMFYART_CONFIG, else built-in defaults)")
    serve.add_argument("--log-level", default=os.environ.get("COMFYART_LOG_LEVEL", "info"))
    serve.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("COMFYART_LOG_FORMAT", "text"),
                       help="json: one object a line, with task, backend and prompt as fields (COMFYART_LOG_FORMAT)")
    keys = commands.add_parser("keys", help="API keys kept in Redis (the daemon need not run)")
    keys.add_argument("--config", type=Path, default=config_default,
                      help="the daemon's configuration (for Redis and its prefix)")
    health = commands.add_parser("healthcheck", help="exit 0 when the daemon of this configuration answers "
                                                     "/healthz (a container's HEALTHCHECK)")
    health.add_argument("--config", type=Path, default=config_default)
    health.add_argument("--timeout", type=float, default=4.0)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="make a key; it is printed once and stored only as a hash")
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--role", choices=["client", "admin"], default="client")
    create.add_argument("--max-queued", type=int, help="its tasks pending or running at once (0: no limit)")
    create.add_argument("--per-minute", type=float, help="its submissions a minute (0: no limit)")
    key_commands.add_parser("list", help="every key made at run time (never a key itself)")
    revoke = key_commands.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id")
    remote.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in remote.REMOTE_COMMANDS:
        return remote.run(args)

    if args.command == "serve":
        configure_logging(args.log_level, args.log_format)
    else:
        configure_logging("warning")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return 2
    if args.command == "keys":
        return _run_keys(args, settings)
    if args.command == "healthcheck":
        return _healthcheck(settings, args.timeout)
    from comfyart.daemon import run  # imported late: argument errors should not pay for docker and uvicorn imports

    try:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            runner.run(run(settings, own_process=True))
    except ConfigError as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return 2
    return 0


def _healthcheck(settings: Settings, timeout_s: float) -> int:
    """GET /healthz on this machine: an address that listens everywhere is asked on loopback."""
    import urllib.error
    import urllib.request

    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.server.host, settings.server.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (a URL of our own)
            body = response.read(4096).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"comfyart: unhealthy: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    print(body)
    return 0


def _run_keys(args: argparse.Namespace, settings: Settings) -> int:
    from comfyart.auth import Role
    from comfyart.store.stores import Stores

    async def act() -> int:
        stores = await Stores.open(settings)
        try:
            store = stores.api_keys
            if args.keys_command == "create":
                if (args.max_queued is not None and args.max_queued < 0) or (args.per_minute or 0) < 0:
                    print("comfyart: --max-queued and --per-minute must be >= 0", file=sys.stderr)
                    return 2
                record, key = await store.create(args.name, Role(args.role), max_queued=args.max_queued,
                                                 submissions_per_minute=args.per_minute)
                print(json.dumps({**record.describe(), "key": key}))
                if not settings.auth.active:
                    print("comfyart: note: auth is off in this configuration; the daemon will not ask for keys "
                          "until auth.enabled is true", file=sys.stderr)
            elif args.keys_command == "list":
                for record in await store.records():
                    print(json.dumps(record.describe()))
            else:
                print(json.dumps((await store.revoke(args.key_id)).describe()))
            return 0
        finally:
            await stores.aclose()

    try:
        return asyncio.run(act())
    except (ConfigError, NotFound, StoreUnavailable) as exc:
        print(f"comfyart: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
