"""The whole configuration: a YAML file validated by pydantic, every field overridable by ``COMFYART_…``
variables (nested fields with ``__``: ``COMFYART_POOL__MIN_CONTAINERS=2``). ``REDIS_URL`` is honoured too."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from comfyart.config.fleet import DnsBackendConfig, DockerConfig, PoolConfig, ProcessConfig, StaticBackendConfig
from comfyart.config.sections import (
    ApiV2Config,
    AuthConfig,
    ClusterConfig,
    ComfyUIConfig,
    DashboardConfig,
    LimitsConfig,
    OutputsConfig,
    RedisConfig,
    SchedulerConfig,
    ServerConfig,
    TrackingConfig,
    WebhooksConfig,
    WorkflowsConfig,
)
from comfyart.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMFYART_", env_nested_delimiter="__", extra="forbid")

    instance: str = Field("main", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$",
                          description="names this daemon's containers; leftovers of the same instance are adopted "
                                      "or removed at start-up")
    server: ServerConfig = Field(default_factory=ServerConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    data_dir: Path = Field(Path("./data"), description="outputs, uploaded inputs, process pid files, the embedded "
                                                       "Redis")
    docker: DockerConfig | None = None
    processes: ProcessConfig | None = None
    pool: PoolConfig = Field(default_factory=PoolConfig)
    static_backends: list[StaticBackendConfig] = Field(default_factory=list)
    dns_backends: list[DnsBackendConfig] = Field(default_factory=list)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    comfyui: ComfyUIConfig = Field(default_factory=ComfyUIConfig)
    api_v2: ApiV2Config = Field(default_factory=ApiV2Config)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type, init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the YAML document arrives as init arguments; environment variables win over it
        return env_settings, init_settings

    @model_validator(mode="after")
    def _unique_static_names(self) -> Settings:
        names = [b.name for b in self.static_backends]
        if len(names) != len(set(names)):
            raise ValueError("static backend names must be unique")
        dns_names = [b.name.rstrip(".").lower() for b in self.dns_backends]
        if len(dns_names) != len(set(dns_names)):
            raise ValueError("dns_backends names must be unique")
        return self


def describe_field_error(error: ErrorDetails) -> str:
    """One error of a model, naming its field: ``pool.min_containers: Input should be ...``."""
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {message}"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each offending field."""
    return "; ".join(describe_field_error(error) for error in exc.errors())


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; any problem raises ConfigError with a one-line message."""
    environ = os.environ if environ is None else environ
    document: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        document = loaded or {}
    if environ.get("REDIS_URL") and "COMFYART_REDIS__URL" not in environ:
        document.setdefault("redis", {})
        if isinstance(document["redis"], dict):
            document["redis"] = {**document["redis"], "url": environ["REDIS_URL"]}
    try:
        settings = Settings(**document)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from exc
    if path is not None and not settings.data_dir.is_absolute():
        # a relative data_dir is relative to the working directory, as users expect from ./data
        settings.data_dir = Path.cwd() / settings.data_dir
    return settings
