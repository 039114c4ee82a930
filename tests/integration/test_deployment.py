"""Deployment: the Dockerfile builds (on a local Debian base, from the wheels scripts/setup made, as CI must) into
an image that runs as a user of its own, serves, passes its own HEALTHCHECK and runs a workflow; docker-compose.yml is
valid, and the configuration its variables make is one the daemon accepts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from comfyart.config.settings import load_settings
from tests.support.docker import DockerEngine, build_daemon_image, start_engine, stop_engine
from tests.support.paths import ROOT
from tests.support.ports import free_port, free_port_range

COMPOSE_ENV = {"COMFYUI_IMAGE": "example.org/comfyui:2026.11", "COMFYUI_GPUS": "[0, 1, 3]",
               "COMFYUI_VOLUMES": '["/srv/models:/app/models:ro"]', "DOCKER_GID": "998"}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: apt-get install docker-compose (scripts/setup installs it)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYUI_", "COMFYART_", "REDIS_PORT"))}
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_and_configures_the_daemon(monkeypatch: pytest.MonkeyPatch):
    result = compose("config", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    redis, daemon = services["redis"], services["comfyart"]
    assert "--appendonly" in redis["command"] and any(v.endswith(":/data:rw") or v.endswith(":/data")
                                                      for v in redis["volumes"])
    assert any(v.startswith("/var/run/docker.sock:/var/run/docker.sock") for v in daemon["volumes"])
    assert any(":/data" in v for v in daemon["volumes"])
    assert daemon["depends_on"]["redis"]["condition"] == "service_healthy"
    assert daemon["group_add"] == ["998"] and daemon["network_mode"] == "host"

    # the daemon accepts the configuration these variables make, on top of the image's own file
    for name, value in daemon["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings(ROOT / "config" / "container.yaml")
    assert settings.docker is not None and settings.docker.image == "example.org/comfyui:2026.11"
    assert settings.docker.hosts[0].gpus == [0, 1, 3] and settings.docker.volumes == ["/srv/models:/app/models:ro"]
    assert settings.redis.url == "redis://127.0.0.1:6379/0" and settings.server.host == "127.0.0.1"
    assert str(settings.data_dir) == "/data" and settings.auth.keys == []

    assert settings.cluster.shared_files  # the replicas share the data volume

    # the second replica (profile "replicas"): the same daemon on another port, the same Redis and data volume
    second = services["comfyart-b"]
    assert second["profiles"] == ["replicas"] and "profiles" not in daemon  # started only when asked for
    assert second["environment"] == {**daemon["environment"], "COMFYART_SERVER__PORT": "8101"}
    assert second["volumes"] == daemon["volumes"] and second["network_mode"] == "host"

    # without an image it says what is missing
    missing = compose("config", env={k: v for k, v in COMPOSE_ENV.items() if k != "COMFYUI_IMAGE"})
    assert missing.returncode != 0 and "COMFYUI_IMAGE" in missing.stderr


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    started = start_engine("deploy")
    try:
        yield started
    finally:
        stop_engine(started)


@pytest.mark.docker
def test_image_builds_runs_unprivileged_is_healthy_and_runs_a_workflow(engine: DockerEngine,
                                                                        tmp_path: Path):
    port, (first, last) = free_port(), free_port_range(4)
    config = {"server": {"host": "127.0.0.1", "port": port},
              "processes": {"command": ["{python}", "-m", "comfyart.emulator", "--host", "{address}", "--port",
                                        "{port}", "--base-dir", "/data/emulator-{port}"],
                            "address": "127.0.0.1", "ports": [first, last], "gpus": [], "startup_timeout": 30},
              "pool": {"min_containers": 1, "max_containers": 1}}
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "comfyart.yaml").write_text(yaml.safe_dump(config))
    conf.chmod(0o755)  # the daemon's user in the container reads it
    (conf / "comfyart.yaml").chmod(0o644)
    with engine.client() as client:
        tag = build_daemon_image(client)
        image = client.images.get(tag)
        assert image.attrs["Config"]["User"] == "10001:10001"
        assert image.attrs["Config"]["Healthcheck"]["Test"][-2:] == ["comfyart", "healthcheck"]
        # the image's own configuration (workflows from /app/config/workflows), a port and a pool for this test
        container = client.containers.run(
            tag, detach=True, network_mode="host", labels={"comfyart.managed": "true"},
            volumes={str(conf): {"bind": "/etc/comfyart-test", "mode": "ro"}},
            environment={"COMFYART_CONFIG": "/etc/comfyart-test/comfyart.yaml",
                         "COMFYART_WORKFLOWS__DIRECTORY": "/app/config/workflows"})
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            health = None
            while time.monotonic() < deadline:
                container.reload()
                assert container.status in ("created", "running"), container.logs().decode()[-3000:]
                health = container.attrs["State"].get("Health", {}).get("Status")
                if health == "healthy":
                    break
                time.sleep(1)
            assert health == "healthy", container.logs().decode()[-3000:]
            assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
            assert container.exec_run(["comfyart", "--version"]).output.decode().startswith("comfyart ")

            run = httpx.post(f"{base}/api/workflows/text-to-image/run",
                             json={"params": {"prompt": "a container ship", "steps": 2, "width": 64}}, timeout=10)
            assert run.status_code == 201, run.text
            task_id = run.json()["id"]
            record = {}
            while time.monotonic() < deadline + 60:
                record = httpx.get(f"{base}/api/tasks/{task_id}", timeout=10).json()
                if record["status"] in ("completed", "failed", "canceled"):
                    break
                time.sleep(0.2)
            assert record["status"] == "completed", json.dumps(record)[:2000]
            output = httpx.get(f"{base}/api/tasks/{task_id}/outputs/{record['outputs'][0]['filename']}", timeout=10)
            assert output.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert httpx.get(f"{base}/", timeout=10).status_code == 200  # the dashboard ships in the image
            editor = httpx.get(f"{base}/comfy/", timeout=10)  # and ComfyUI's editor, from its wheel
            assert editor.status_code == 200 and "<title>ComfyUI</title>" in editor.text
        finally:
            container.stop(timeout=30)
            logs = container.logs().decode()
            container.remove(force=True)
        assert "stopped" in logs.splitlines()[-1], logs[-2000:]  # SIGTERM: the daemon shut down cleanly
