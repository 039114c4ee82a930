"""The options several commands share, accepted before the command as in git, docker and kubectl
(``comfyart --url URL tasks``) and after it (``comfyart tasks --url URL``); given in both places, the one after the
command wins. The top-level parser holds them with the default ``None`` (so an option given there is seen as
given); each command's parser holds them again with no default at all (``SUPPRESS``), so an option left out after
the command never overwrites one given before it. ``resolve`` then fills what is still missing from the
environment and the built-in defaults.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8100"
URL_HELP = f"the daemon to talk to (default: $COMFYART_URL, else {DEFAULT_URL})"
KEY_HELP = "API key sent as a bearer token (default: $COMFYART_KEY)"
JSON_HELP = "print the daemon's JSON, for scripts"
CONFIG_HELP = "YAML configuration file (default: $COMFYART_CONFIG, else built-in defaults)"
PLACEMENT = ("options shared by several commands may come before the command (comfyart --url URL tasks) or after "
             "it; given in both places, the one after the command wins")


def add_remote_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """--url, --key, --json: where the daemon is, as whom, and how to print its answers."""
    default = None if top_level else argparse.SUPPRESS
    parser.add_argument("--url", default=default, help=URL_HELP)
    parser.add_argument("--key", default=default, help=KEY_HELP)
    parser.add_argument("--json", action="store_true", default=False if top_level else argparse.SUPPRESS,
                        help=JSON_HELP)


def add_config_option(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """--config: the daemon's configuration file (serve, keys, healthcheck)."""
    parser.add_argument("--config", type=Path, default=None if top_level else argparse.SUPPRESS, help=CONFIG_HELP)


def misplaced(command: str, remote: bool, args: argparse.Namespace) -> str | None:
    """Why a shared option given before ``command`` does not apply to it, or None when all apply. ``remote``:
    the command talks to a running daemon (it takes --url, --key, --json), else it reads --config."""
    if remote:
        return f"--config does not apply to '{command}': it talks to a daemon at --url" \
            if args.config is not None else None
    given = [f"--{name}" for name in ("url", "key") if getattr(args, name) is not None]
    if args.json:
        given.append("--json")
    if given:
        return f"{', '.join(given)} does not apply to '{command}': it reads --config, not a running daemon"
    return None


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """What the command line left out, from the environment (COMFYART_URL, COMFYART_KEY, COMFYART_CONFIG), else
    the defaults; an empty variable counts as unset."""
    args.url = args.url or environ.get("COMFYART_URL") or DEFAULT_URL
    args.key = args.key or environ.get("COMFYART_KEY") or None
    if args.config is None and environ.get("COMFYART_CONFIG"):
        args.config = Path(environ["COMFYART_CONFIG"])


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a daemon (one line), or None: it needs http:// or https:// and a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return (f"the daemon's URL {url!r} (--url or COMFYART_URL) needs http:// or https:// and a host, "
                f"e.g. {DEFAULT_URL}")
    return None
