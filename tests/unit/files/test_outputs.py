"""The output store (files.outputs): file names from backends, and paths that never leave a task's folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfyart.files.outputs import MAX_NAME_BYTES, OutputStore, safe_filename


@pytest.mark.parametrize("name, expected", [
    ("a.png", "a.png"), ("../../etc/passwd", "passwd"), ("/abs/x.png", "x.png"), ("..\\..\\win.png", "win.png"),
    ("..", "output"), (".", "output"), ("", "output"), ("dir/", "output"), ("a\x00b\n.png", "a_b_.png"),
])
def test_file_names_from_backends_become_one_harmless_component(name, expected):
    assert safe_filename(name) == expected


def test_long_file_names_are_cut_with_their_extension_kept():
    cut = safe_filename("é" * 300 + ".png")
    assert cut.endswith(".png") and len(cut.encode()) <= MAX_NAME_BYTES
    cut.encode().decode()  # never half a character
    assert len(safe_filename("x" * 1000).encode()) <= MAX_NAME_BYTES


def test_a_stored_output_never_resolves_outside_its_task(tmp_path):
    from comfyart.files.inputs import InputStore
    from comfyart.files.outputs import OutputStore

    store = OutputStore(tmp_path / "outputs")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (store.task_dir("T1") / "link.png").symlink_to(secret)  # planted by anything but comfyart
    (store.task_dir("T1") / "ok.png").write_bytes(b"png")
    assert store.find("T1", "ok.png") == (store.root / "T1" / "ok.png")
    for name in ("link.png", "../../secret.txt", "..", "/etc/passwd", "a/../ok.png", ""):
        assert store.find("T1", name) is None, name
    assert store.destination("T1", "../../../x.png", "9").parent == store.root / "T1"
    assert store.destination("T1", "ok.png", "../../9").parent == store.root / "T1"  # node ids from backends too
    inputs = InputStore(tmp_path / "inputs")
    for name in ("../secret.txt", "/etc/passwd", "ab", "x" * 64 + ".png"):
        assert inputs.path(name) is None


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "..", "", "a/b.png"])
def test_output_store_never_serves_outside_a_task(tmp_path: Path, name):
    store = OutputStore(tmp_path)
    (tmp_path / "x.png").write_bytes(b"secret")
    assert store.find("task", name) is None


def test_output_store_names(tmp_path: Path):
    store = OutputStore(tmp_path)
    first = store.destination("t", "../../evil.png", "9")
    assert first == (tmp_path / "t" / "evil.png").resolve() or first.parent == tmp_path.resolve() / "t"
    first.write_bytes(b"1")
    second = store.destination("t", "sub/evil.png", "10")
    assert second.name == "10_evil.png" and second.parent == first.parent
    assert store.find("t", "evil.png") == first.resolve()
