"""Command line: ``comfyart serve --config FILE``; ``comfyart keys create|list|revoke`` for API keys (in Redis);
``submit``, ``tasks``, ``task``, ``cancel``, ``pool``, ``models``, ``workflows``, ``status``, ``drain`` against a
running daemon (``remote``)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable

from comfyart import __version__
from comfyart.cli import options, remote
from comfyart.cli.logs import configure_logging
from comfyart.config.settings import Settings, load_settings
from comfyart.errors import ConfigError, NotFound, StoreUnavailable

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: how a shell reports a writer its reader left


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (it is in requirements.txt): it roughly halves the cost of each socket
    operation, and the daemon is a few thousand of those per second under load."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    """The ``comfyart`` command; returns its exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, not as Python exits: a reader gone is met where it can be handled
        return status
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        print("comfyart: interrupted", file=sys.stderr)
        return remote.INTERRUPTED


def _reader_gone() -> int:
    """The reader of our output left (``comfyart … | head``): stop without a word, with the status of a process
    that SIGPIPE stopped (128 + 13), as ``cat``, ``git log`` and the other tools of a pipeline do, so that
    ``set -o pipefail`` tells a cut-short output from a whole one. Python would write the rest of its buffer when it
    exits and complain there again; standard output and error now lead nowhere."""
    with contextlib.suppress(OSError, ValueError):
        nowhere = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(nowhere, stream.fileno())
    return SIGPIPE_STATUS


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="comfyart", description="Elastic scheduler for ComfyUI fleets",
                                  epilog=options.PLACEMENT)
    top.add_argument("--version", action="version", version=f"comfyart {__version__}")
    options.add_remote_options(top, top_level=True)
    options.add_config_option(top, top_level=True)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = _command(commands, "serve", "run the daemon: REST API, pool, dispatcher, tracker")
    options.add_config_option(serve)
    serve.add_argument("--log-level", default=os.environ.get("COMFYART_LOG_LEVEL", "info"),
                       help="debug, info, warning or error (COMFYART_LOG_LEVEL; default info)")
    serve.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("COMFYART_LOG_FORMAT", "text"),
                       help="json: one object a line, with task, backend and prompt as fields (COMFYART_LOG_FORMAT)")
    health = _command(commands, "healthcheck", "exit 0 when the daemon of this configuration answers /healthz "
                                               "(a container's HEALTHCHECK)")
    options.add_config_option(health)
    health.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer (default 4)")
    keys = _command(commands, "keys", "API keys kept in Redis (the daemon need not run)")
    options.add_config_option(keys)
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="{create,list,revoke}")
    create = _command(key_commands, "create", "make a key; it is printed once and stored only as a hash")
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--role", choices=["client", "admin"], default="client")
    create.add_argument("--max-queued", type=int, help="its tasks pending or running at once (0: no limit)")
    create.add_argument("--per-minute", type=float, help="its submissions a minute (0: no limit)")
    listing = _command(key_commands, "list", "every key made at run time (never a key itself)")
    revoke = _command(key_commands, "revoke", "refuse a key from now on")
    revoke.add_argument("key_id")
    for leaf in (create, listing, revoke):
        options.add_config_option(leaf)
    remote.add_commands(commands)
    return top


def _command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             help_text: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help_text, description=help_text, epilog=options.PLACEMENT)


def _run(argv: list[str] | None) -> int:
    top = build_parser()
    args = top.parse_args(argv)
    is_remote = args.command in remote.REMOTE_COMMANDS
    problem = options.misplaced(args.command, is_remote, args)
    if problem:
        top.error(problem)
    options.resolve(args, os.environ)
    if is_remote:
        bad_url = options.url_problem(args.url)
        if bad_url:
            print(f"comfyart: {bad_url}", file=sys.stderr)
            return 2
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
