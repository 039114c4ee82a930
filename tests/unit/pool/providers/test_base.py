"""What every provider shares: the command with its placeholders filled in."""
from __future__ import annotations

import pytest

from comfyart.pool.providers.base import render_command


def test_placeholders_are_filled_in_inside_any_argument():
    template = ["{python}", "main.py", "--listen", "{address}", "--port", "{port}", "--output-directory",
                "/out/{port}", "--name=gpu{gpu}-{address}:{port}"]
    assert render_command(template, address="127.0.0.2", port=8201, gpu=3, python="python3") == [
        "python3", "main.py", "--listen", "127.0.0.2", "--port", "8201", "--output-directory", "/out/8201",
        "--name=gpu3-127.0.0.2:8201"]


def test_without_a_gpu_the_gpu_placeholder_is_empty():
    assert render_command(["--tag=gpu{gpu}"], address="a", port=1, gpu=None, python="p") == ["--tag=gpu"]


def test_other_single_braces_are_left_as_written():
    template = ["sh", "-c", "exec python main.py --port {port} --output-directory ${OUT:-/out}/{port}",
                '--json={"port": {port}}', "{unknown}", "{", "}", "a}b{c"]
    assert render_command(template, address="a", port=8300, gpu=None, python="p") == [
        "sh", "-c", "exec python main.py --port 8300 --output-directory ${OUT:-/out}/8300",
        '--json={"port": 8300}', "{unknown}", "{", "}", "a}b{c"]


@pytest.mark.parametrize(("argument", "rendered"), [
    ("{{port}}", "{port}"),  # doubled braces are literal ones, as under str.format: never a placeholder
    ("${{OUT}}/{port}", "${OUT}/8300"),  # how a config written for str.format names a shell variable
    ("{{{port}}}", "{8300}"),
    ("{{{{", "{{"),
    ("}}", "}"),
    ('--json={{"port": {port}, "gpu": "{gpu}"}}', '--json={"port": 8300, "gpu": ""}'),
])
def test_doubled_braces_are_one_literal_brace_as_under_str_format(argument: str, rendered: str):
    assert render_command([argument], address="a", port=8300, gpu=None, python="p") == [rendered]
    assert argument.format(address="a", port=8300, gpu="", python="p") == rendered  # what configs were written for


@pytest.mark.parametrize(("argument", "rendered"), [("{{unknown}}", "{unknown}"), ("{port}}", "8300}"),
                                                    ("{{port}", "{port}"), ("{{", "{")])
def test_doubled_braces_read_left_to_right(argument: str, rendered: str):
    assert render_command([argument], address="a", port=8300, gpu=None, python="p") == [rendered]
