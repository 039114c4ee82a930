"""The Docker provider's create call, read without an engine."""
from __future__ import annotations

import pytest

from comfyart.config.fleet import DockerConfig
from comfyart.policy.placement import Placement
from comfyart.pool.providers.docker import DockerProvider, host_volumes


def test_the_create_call_carries_the_gpu_request_and_pinning():
    provider = DockerProvider(DockerConfig(image="img", hosts=[{"name": "h", "ports": [9000, 9001], "gpus": [3]}]),
                              instance="main")
    options = provider.container_options(Placement("h", 9000, 3), "127.0.0.1")
    [request] = options["device_requests"]
    assert request["DeviceIDs"] == ["3"] and request["Capabilities"] == [["gpu"]]
    assert options["environment"]["NVIDIA_VISIBLE_DEVICES"] == "3"
    assert options["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert options["labels"]["comfyart.gpu"] == "3" and options["network_mode"] == "host"
    assert options["command"][-1] == "9000"


def test_bridge_networking_publishes_the_container_port_on_the_host_port():
    config = DockerConfig(image="img", network="bridge", container_port=8188,
                          hosts=[{"name": "h", "address": "127.0.0.5", "ports": [9000, 9001]}])
    options = DockerProvider(config, instance="x").container_options(Placement("h", 9001, None), "127.0.0.5")
    assert options["ports"] == {"8188/tcp": ("127.0.0.5", 9001)}
    assert "network_mode" not in options and "device_requests" not in options
    assert options["command"][-3:] == ["0.0.0.0", "--port", "8188"]
    assert options["name"] == "comfyart-x-h-9001"


def test_the_working_directory_is_the_images_unless_configured():
    host = {"name": "h", "ports": [9000, 9001]}
    default = DockerProvider(DockerConfig(image="img", hosts=[host]), instance="x")
    assert "working_dir" not in default.container_options(Placement("h", 9000, None), "127.0.0.1")
    configured = DockerProvider(DockerConfig(image="img", working_dir="/opt/ComfyUI", hosts=[host]), instance="x")
    assert configured.container_options(Placement("h", 9000, None), "127.0.0.1")["working_dir"] == "/opt/ComfyUI"


def test_a_host_without_gpus_gets_no_device_request_and_no_gpu_environment():
    config = DockerConfig(image="img", command=["python", "main.py", "--cpu", "--output-directory", "/out/{port}",
                                                "--tag=gpu{gpu}"],
                          hosts=[{"name": "cpu", "ports": [9000, 9001], "gpus": []}])
    provider = DockerProvider(config, instance="x")
    assert provider.hosts[0].gpus == ()
    options = provider.container_options(Placement("cpu", 9001, None), "127.0.0.1")
    assert "device_requests" not in options and options["environment"] == {}
    assert options["labels"]["comfyart.gpu"] == ""
    assert options["command"][-2:] == ["/out/9001", "--tag=gpu"]


def test_a_host_may_run_its_own_image_and_mount_its_own_models():
    config = DockerConfig(image="comfy:common", volumes=["/srv/models:/app/models:ro", "/srv/cache:/cache"],
                          hosts=[{"name": "a", "ports": [9000, 9001]},
                                 {"name": "b", "ports": [9000, 9001], "image": "comfy:video",
                                  "volumes": ["/big/models:/app/models:ro", "/scratch:/scratch"]}])
    provider = DockerProvider(config, instance="x")
    a = provider.container_options(Placement("a", 9000, None), "127.0.0.1")
    b = provider.container_options(Placement("b", 9000, None), "127.0.0.1")
    assert (a["image"], a["volumes"]) == ("comfy:common", ["/srv/models:/app/models:ro", "/srv/cache:/cache"])
    assert (b["image"], b["volumes"]) == ("comfy:video", ["/srv/cache:/cache", "/big/models:/app/models:ro",
                                                          "/scratch:/scratch"])
    assert [h.image for h in provider.hosts] == ["comfy:common", "comfy:video"]  # what a leftover must run


@pytest.mark.parametrize("common, own, expected", [
    ([], [], []),
    (["/m:/models"], [], ["/m:/models"]),
    ([], ["/m:/models"], ["/m:/models"]),
    (["/m:/models", "/o:/out"], ["/n:/models:ro"], ["/o:/out", "/n:/models:ro"]),
    (["/m:/models"], ["/n:/models/extra"], ["/m:/models", "/n:/models/extra"]),
    (["cache:/cache"], ["/cache"], ["/cache"]),
])
def test_host_volumes_replace_those_at_the_same_container_path(common, own, expected):
    assert host_volumes(common, own) == expected
