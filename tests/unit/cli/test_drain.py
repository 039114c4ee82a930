"""``comfyart drain``'s command line (cli.drain): which backend, whether to wait, and the refusals that need no
daemon (exit 2, one line)."""
from __future__ import annotations

import pytest

from comfyart.cli.main import build_parser, main


def test_a_backend_or_an_address_and_a_timeout_that_implies_waiting():
    args = build_parser().parse_args(["drain", "--address", "127.0.3.7:8188", "--timeout", "25"])
    assert (args.address, args.backend, args.wait, args.timeout) == ("127.0.3.7:8188", None, False, 25.0)
    args = build_parser().parse_args(["drain", "--backend", "static:gpu-0", "--wait"])
    assert (args.backend, args.wait, args.timeout) == ("static:gpu-0", True, None)


@pytest.mark.parametrize("argv", [["drain"], ["drain", "--backend", "a", "--address", "127.0.0.1:1"]])
def test_exactly_one_of_backend_and_address(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2 and "--backend" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["drain", "--address", "127.0.3.7"], "--address '127.0.3.7' is not HOST:PORT"),
    (["drain", "--backend", "a", "--timeout", "-1"], "--timeout must be >= 0"),
])
def test_refused_before_any_request(argv, said, capsys):
    # a URL where nothing listens: these are refused before any request is sent
    assert main([*argv, "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1


def test_no_daemon_is_exit_2(capsys):
    assert main(["drain", "--backend", "a", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the daemon" in capsys.readouterr().err
