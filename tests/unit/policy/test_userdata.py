"""The user manager's pure rules (policy.userdata): which names a user may store under, how the route's raw path
names its files, what a listing holds, how a file is served."""
from __future__ import annotations

import pytest

from comfyart.policy.userdata import (
    MAX_PATH_CHARS,
    BadUserPath,
    FileInfo,
    is_directory,
    listing,
    merged_settings,
    new_user_id,
    served_as,
    user_path,
    userdata_target,
)


@pytest.mark.parametrize("raw, stored", [
    pytest.param("comfy.settings.json", "comfy.settings.json", id="a file"),
    pytest.param("workflows/my flow.json", "workflows/my flow.json", id="in a directory, with a space"),
    pytest.param("a/b/c/d.json", "a/b/c/d.json", id="deep"),
    pytest.param(".index.json", ".index.json", id="hidden"),
    pytest.param("..json", "..json", id="dots in a name"),
    pytest.param("a..b/c...", "a..b/c...", id="dots inside segments"),
    pytest.param("caf\u0065\u0301.json", "caf\u00e9.json", id="NFC"),
    pytest.param("ab:c.json", "ab:c.json", id="a colon, not a drive"),
    pytest.param("%2e%2e", "%2e%2e", id="percent signs are a name (decoded before)"),
    pytest.param("x" * 255, "x" * 255, id="the longest name"),
    pytest.param("é" * 127, "é" * 127, id="the longest name in bytes"),
    pytest.param("/".join(["x" * 200] * 5), "/".join(["x" * 200] * 5), id="near the longest path"),
])
def test_names_a_user_may_store_under(raw: str, stored: str) -> None:
    assert user_path(raw) == stored


@pytest.mark.parametrize("raw, why", [
    pytest.param("", "empty", id="empty"),
    pytest.param("..", "'..'", id="parent"),
    pytest.param("../x.json", "'..'", id="leading parent"),
    pytest.param("a/../../x.json", "'..'", id="inner parent"),
    pytest.param("a/..", "'..'", id="trailing parent"),
    pytest.param(".", "'.'", id="here"),
    pytest.param("./x.json", "'.'", id="leading here"),
    pytest.param("a/./b", "'.'", id="inner here"),
    pytest.param("/etc/passwd", "absolute", id="absolute"),
    pytest.param("//x", "absolute", id="double slash"),
    pytest.param("C:/x.json", "absolute", id="a drive"),
    pytest.param("c:x.json", "absolute", id="a drive, relative"),
    pytest.param("a\\b.json", "backslash", id="backslash"),
    pytest.param("..\\x.json", "backslash", id="windows parent"),
    pytest.param("a\0b", "control", id="NUL"),
    pytest.param("a\nb", "control", id="newline"),
    pytest.param("a\x7fb", "control", id="DEL"),
    pytest.param("a//b", "empty", id="empty segment"),
    pytest.param("a/", "empty", id="trailing slash"),
    pytest.param("x" * 256, "255 bytes", id="a name too long"),
    pytest.param("é" * 128, "255 bytes", id="a name too long in bytes"),
    pytest.param("/".join(["x" * 200] * 6), f"{MAX_PATH_CHARS} characters", id="a path too long"),
])
def test_names_refused(raw: str, why: str) -> None:
    with pytest.raises(BadUserPath) as refused:
        user_path(raw)
    assert why in str(refused.value) and str(refused.value).startswith("Invalid path")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("raw, stored", [("workflows/", "workflows"), ("a/b//", "a/b"), ("workflows", "workflows")])
def test_a_directory_may_end_with_a_slash(raw: str, stored: str) -> None:
    assert user_path(raw, directory=True) == stored


@pytest.mark.parametrize("raw", ["/", "//", "../", "/a/", ""])
def test_a_directory_is_checked_as_a_name(raw: str) -> None:
    with pytest.raises(BadUserPath):
        user_path(raw, directory=True)


@pytest.mark.parametrize("raw_rest, target", [
    pytest.param("workflows%2Fx.json", ("workflows/x.json", None), id="encoded slash"),
    pytest.param("my%20flow.json", ("my flow.json", None), id="space"),
    pytest.param("100%25.json", ("100%.json", None), id="a percent sign: decoded twice, as ComfyUI"),
    pytest.param("%252e%252e%2Fx", ("../x", None), id="double encoded parent: decoded, then refused"),
    pytest.param("a.json/move/b.json", ("a.json", "b.json"), id="move"),
    pytest.param("w%2Fa.json/move/w%2Fmove%2Fb.json", ("w/a.json", "w/move/b.json"), id="move, encoded"),
    pytest.param("move", ("move", None), id="a file named move"),
    pytest.param("", None, id="nothing"),
    pytest.param("a/b", None, id="two raw segments"),
    pytest.param("a/copy/b", None, id="not move"),
    pytest.param("a/move/", None, id="no destination"),
    pytest.param("/move/b", None, id="no source"),
    pytest.param("a/move/b/c", None, id="four segments"),
])
def test_the_raw_path_names_a_file_or_a_move(raw_rest: str, target: tuple[str, str | None] | None) -> None:
    assert userdata_target(raw_rest) == target


FILES = [FileInfo(p, size, 10, 20) for p, size in [
    ("workflows/b.json", 2), ("workflows/a.json", 1), ("workflows/sub/c.json", 3), ("workflows/.index.json", 4),
    ("workflows/.hidden/d.json", 5), ("workflowsX/e.json", 6), ("comfy.settings.json", 7), ("workflows/sub/.f", 8)]]


@pytest.mark.parametrize("directory, recurse, full_info, split, expected", [
    pytest.param("workflows", False, False, False, ["a.json", "b.json"], id="one level, sorted, no hidden"),
    pytest.param("workflows", True, False, False, ["a.json", "b.json", "sub/c.json"], id="recursive"),
    pytest.param("workflows", True, False, True, [["a.json", "a.json"], ["b.json", "b.json"],
                                                  ["sub/c.json", "sub", "c.json"]], id="split"),
    pytest.param("workflows", False, True, True, [
        {"path": "a.json", "size": 1, "modified": 20, "created": 10},
        {"path": "b.json", "size": 2, "modified": 20, "created": 10}], id="full info wins over split"),
    pytest.param("workflows/sub", True, True, False, [{"path": "c.json", "size": 3, "modified": 20,
                                                       "created": 10}], id="a subdirectory"),
    pytest.param("workflows/.hidden", False, False, False, ["d.json"], id="inside a hidden directory, asked"),
    pytest.param("nothing", True, False, False, [], id="none"),
])
def test_a_listing_holds_what_comfyuis_glob_finds(directory: str, recurse: bool, full_info: bool, split: bool,
                                                  expected: list[object]) -> None:
    assert listing(FILES, directory, recurse=recurse, full_info=full_info, split=split) == expected


def test_a_directory_exists_while_it_holds_a_file() -> None:
    paths = [f.path for f in FILES]
    assert is_directory(paths, "workflows") and is_directory(paths, "workflows/sub")
    assert not is_directory(paths, "workflow") and not is_directory(paths, "comfy.settings.json")
    assert not is_directory(paths, "workflows/a.json")


@pytest.mark.parametrize("path, served", [
    ("user.css", ("text/css", "inline")),
    ("a/user.css", ("application/octet-stream", "attachment")),
    ("workflows/x.json", ("application/json", "attachment")),
    ("x.JSON", ("application/json", "attachment")),
    ("page.html", ("application/octet-stream", "attachment")),
    ("script.js", ("application/octet-stream", "attachment")),
    ("image.svg", ("application/octet-stream", "attachment")),
    ("photo.png", ("image/png", "attachment")),
    ("notes", ("application/octet-stream", "attachment")),
    (".json", ("application/json", "attachment")),
])
def test_a_file_never_runs_as_a_page_or_a_script(path: str, served: tuple[str, str]) -> None:
    assert served_as(path) == served


def test_settings_merge_as_comfyui_merges_them() -> None:
    assert merged_settings({"a": 1, "b": [1]}, {"b": [], "c": None}) == {"a": 1, "b": [], "c": None}


@pytest.mark.parametrize("username, answer", [
    ("Ann", "Ann_u"), ("Ann B", "Ann-B_u"), ("  a/b..c  ", "a-b-c_u"), ("x_y-z", "x_y-z_u"), (" default ", "default_u"),
])
def test_a_new_user_gets_an_id_as_comfyui_makes_it(username: str, answer: str) -> None:
    assert new_user_id(username, "u") == answer


@pytest.mark.parametrize("username, why", [("default", "Duplicate username."), ("", "username not provided"),
                                           ("   ", "username not provided")])
def test_a_new_user_refused(username: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        new_user_id(username, "u")
