"""The fleet's configuration: Docker and process sections."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyart.config.fleet import DockerConfig, ProcessConfig


def test_the_working_directory_is_optional_and_kept_as_written():
    assert DockerConfig(image="img").working_dir is None
    assert DockerConfig(image="img", working_dir="/opt/ComfyUI").working_dir == "/opt/ComfyUI"
    assert ProcessConfig().working_dir is None
    assert ProcessConfig(working_dir="../ComfyUI").working_dir == Path("../ComfyUI")


@pytest.mark.parametrize("section", [DockerConfig, ProcessConfig])
def test_a_working_directory_of_the_wrong_type_is_refused(section):
    with pytest.raises(ValidationError, match="working_dir"):
        section(image="img", working_dir=["/a"]) if section is DockerConfig else section(working_dir=["/a"])


def test_a_containers_working_directory_must_be_absolute():
    with pytest.raises(ValidationError, match=r"working_dir\n.*must be an absolute path inside the image"):
        DockerConfig(image="img", working_dir="ComfyUI")
