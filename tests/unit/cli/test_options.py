"""The options several commands share: before the command as in git, after it, or both (the one after wins); the
environment fills what the command line left out."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from comfyart.cli import options
from comfyart.cli.main import build_parser, main

ENV = {"COMFYART_URL": "http://env:1", "COMFYART_KEY": "env-key", "COMFYART_CONFIG": "env.yaml"}


def parsed(*argv: str, environ: dict[str, str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    options.resolve(args, environ or {})
    return args


@pytest.mark.parametrize("command", [["tasks"], ["task", "T1"], ["cancel", "T1"], ["retry", "T1"], ["pool"],
                                     ["submit", "--workflow", "w"], ["workflows", "list"],
                                     ["workflows", "show", "w"], ["workflows", "rm", "w"]])
@pytest.mark.parametrize(("before", "after", "url", "key", "as_json"), [
    ([], [], "http://env:1", "env-key", False),                                       # the environment
    (["--url", "http://a:1", "--key", "ka", "--json"], [], "http://a:1", "ka", True),  # before the command
    ([], ["--url", "http://b:2", "--key", "kb", "--json"], "http://b:2", "kb", True),  # after it
    (["--url", "http://a:1", "--key", "ka"], ["--url", "http://b:2"], "http://b:2", "ka", False),  # after wins
    (["--json"], ["--key", "kb"], "http://env:1", "kb", True),                         # each from its place
])
def test_remote_options_before_or_after_the_command(command, before, after, url, key, as_json):
    args = parsed(*before, *command, *after, environ=ENV)
    assert (args.command, args.url, args.key, args.json) == (command[0], url, key, as_json)


def test_between_a_command_and_its_action_too():
    args = parsed("--url", "http://a:1", "workflows", "--url", "http://b:2", "show", "w", "--key", "kc")
    assert (args.url, args.key, args.workflow_command, args.name) == ("http://b:2", "kc", "show", "w")


def test_defaults_without_environment():
    args = parsed("tasks", environ={"COMFYART_URL": "", "COMFYART_KEY": ""})
    assert (args.url, args.key, args.json, args.config) == (options.DEFAULT_URL, None, False, None)


@pytest.mark.parametrize("command", [["serve"], ["healthcheck"], ["keys", "list"], ["keys", "revoke", "K1"],
                                     ["keys", "create", "--name", "n"]])
@pytest.mark.parametrize(("before", "after", "config"), [
    ([], [], Path("env.yaml")),
    (["--config", "a.yaml"], [], Path("a.yaml")),
    ([], ["--config", "b.yaml"], Path("b.yaml")),
    (["--config", "a.yaml"], ["--config", "b.yaml"], Path("b.yaml")),
])
def test_config_before_or_after_the_command(command, before, after, config):
    assert parsed(*before, *command, *after, environ=ENV).config == config


def test_keys_takes_config_before_its_action_too():
    assert parsed("keys", "--config", "k.yaml", "list").config == Path("k.yaml")


@pytest.mark.parametrize(("argv", "message"), [
    (["--url", "http://a:1", "serve"], "--url does not apply to 'serve'"),
    (["--key", "k", "--json", "keys", "list"], "--key, --json does not apply to 'keys'"),
    (["--config", "c.yaml", "tasks"], "--config does not apply to 'tasks'"),
])
def test_an_option_before_a_command_it_does_not_apply_to_is_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help_says_where_options_go(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--url URL" in out and "the one after the command wins" in out


@pytest.mark.parametrize(("url", "fine"), [
    ("http://127.0.0.1:8100", True), ("https://comfyart.example/base/", True), ("HTTP://h:1", True),
    ("localhost:8100", False), ("127.0.0.1:8100", False), ("ftp://h", False), ("http://", False), ("", False),
])
def test_a_url_needs_a_scheme_and_a_host(url, fine):
    assert (options.url_problem(url) is None) == fine


def test_a_url_without_scheme_is_one_line_before_any_request(capsys):
    assert main(["--url", "localhost:8100", "tasks"]) == 2
    assert capsys.readouterr().err == ("comfyart: the daemon's URL 'localhost:8100' (--url or COMFYART_URL) needs "
                                       "http:// or https:// and a host, e.g. http://127.0.0.1:8100\n")
