"""The emulator's command line (emulator.__main__): ``--models`` as model files by folder."""
from __future__ import annotations

import pytest

from comfyart.emulator.__main__ import parse_args, parse_models
from comfyart.emulator.engine import DEFAULT_MODELS


@pytest.mark.parametrize("text, models", [
    ("", {}), (" , ", {}),
    ("vae/ae.safetensors", {"vae": ["ae.safetensors"]}),
    ("loras/a.pt, loras/sub/b.safetensors,vae/x.sft", {"loras": ["a.pt", "sub/b.safetensors"], "vae": ["x.sft"]})])
def test_models_are_read_by_folder(text, models):
    assert parse_models(text) == models


@pytest.mark.parametrize("text, problem", [
    ("ae.safetensors", "'ae.safetensors' is not FOLDER/NAME"), ("vae/", "'vae/' is not FOLDER/NAME"),
    ("vaes/ae.safetensors", "'vaes' is no model folder")])
def test_a_model_without_a_known_folder_is_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_models(text)


def test_a_plain_emulator_holds_the_editor_default_workflows_models():
    assert parse_args([]).model_files == {folder: list(names) for folder, names in DEFAULT_MODELS.items()}
    assert parse_args(["--models", ""]).model_files == {}
