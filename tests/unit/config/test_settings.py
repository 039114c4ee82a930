"""Loading the configuration (config.settings): the shipped files, one line naming the field at fault, and the
environment."""
from __future__ import annotations

from pathlib import Path

import pytest

from comfyart.config.settings import load_settings
from comfyart.errors import ConfigError
from tests.support.paths import ROOT

CONFIG_DIR = ROOT / "config"


@pytest.mark.parametrize("name", ["comfyart.yaml", "demo.yaml", "container.yaml", "gpu-hosts.yaml"])
def test_shipped_configs_are_valid(name):
    settings = load_settings(CONFIG_DIR / name, environ={})
    assert settings.server.port > 0


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("docker: {image: x, hosts: [{name: a}]}", "docker.hosts.0.ports: Field required"),
    ("pool: {min_containers: many}", "pool.min_containers: Input should be a valid integer"),
    ("pool: {min_containers: 5, max_containers: 2}", "pool: min_containers (5) exceeds max_containers (2)"),
    ("pool: {static_lost_after_s: 20}",
     "pool: static_lost_after_s (20) must exceed health_timeout_s + health_interval_s (15 + 5), or be 0"),
    ("pool: {health_timeout_s: 30}",
     "pool: static_lost_after_s (30) must exceed health_timeout_s + health_interval_s (30 + 5), or be 0"),
    ("serve: {}", "serve: unknown field"),
    ("docker: {hosts: []}", "docker.image: Field required"),
    ("processes: {ports: [9000, 8000]}", "processes.ports: port range 9000-8000"),
    ("static_backends: [{name: a, url: 'ftp://x'}]", "static_backends.0.url: must start with http"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("pool: {min_containers: [\n", "is not valid YAML"),
])
def test_a_bad_config_stops_with_one_line_naming_the_field(tmp_path: Path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("COMFYART_POOL__MIN_CONTAINERS", "3")
    monkeypatch.setenv("COMFYART_SERVER__PORT", "9999")
    settings = load_settings(write(tmp_path, "pool: {min_containers: 1, max_containers: 4}\nserver: {port: 1}"),
                             environ={})
    assert settings.pool.min_containers == 3 and settings.pool.max_containers == 4
    assert settings.server.port == 9999


def test_bad_environment_value_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("COMFYART_SCHEDULER__PREFETCH", "zero")
    with pytest.raises(ConfigError, match="scheduler.prefetch"):
        load_settings(write(tmp_path, "{}"), environ={})


def test_redis_url_variable(tmp_path: Path):
    settings = load_settings(write(tmp_path, "redis: {prefix: x}"), environ={"REDIS_URL": "redis://h:1/2"})
    assert settings.redis.url == "redis://h:1/2" and settings.redis.prefix == "x"
    assert load_settings(write(tmp_path, "{}"), environ={}).redis.url is None


def test_a_static_lost_after_of_zero_fits_any_health_timing(tmp_path: Path):
    settings = load_settings(write(tmp_path, "pool: {health_timeout_s: 60, static_lost_after_s: 0}"), environ={})
    assert settings.pool.static_lost_after_s == 0
    settings = load_settings(write(tmp_path, "pool: {health_timeout_s: 60, static_lost_after_s: 65.5}"), environ={})
    assert settings.pool.static_lost_after_s == 65.5
