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


def test_a_dns_backend_has_sensible_defaults():
    from comfyart.config.fleet import DnsBackendConfig

    entry = DnsBackendConfig(name="comfyui.gpu.svc.cluster.local")
    assert (entry.port, entry.scheme, entry.path, entry.interval_s, entry.nameserver) == (8188, "http", None, 5.0, None)
    assert entry.nameserver_address() is None


@pytest.mark.parametrize(("nameserver", "address"), [
    ("127.96.0.10", ("127.96.0.10", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)), ("[::1]", ("::1", 53)),
])
def test_a_nameserver_is_an_ip_with_an_optional_port(nameserver, address):
    from comfyart.config.fleet import DnsBackendConfig

    assert DnsBackendConfig(name="comfyui", nameserver=nameserver).nameserver_address() == address


@pytest.mark.parametrize("nameserver", ["kube-dns", "127.0.0.1:0", "127.0.0.1:dns", "[::1]x", "127.0.0.1:70000"])
def test_a_nameserver_that_is_not_an_ip_and_port_is_refused(nameserver):
    from comfyart.config.fleet import DnsBackendConfig

    with pytest.raises(ValidationError, match="nameserver"):
        DnsBackendConfig(name="comfyui", nameserver=nameserver)


@pytest.mark.parametrize("name", ["", "comfy ui", "comfyui:8188", "-comfyui", "a..b"])
def test_a_dns_name_must_be_a_name(name):
    from comfyart.config.fleet import DnsBackendConfig

    with pytest.raises(ValidationError, match="name"):
        DnsBackendConfig(name=name)


def test_dns_names_must_be_unique():
    from comfyart.config.settings import Settings

    with pytest.raises(ValidationError, match="dns_backends names must be unique"):
        Settings(dns_backends=[{"name": "comfyui.gpu"}, {"name": "ComfyUI.gpu."}])
