"""Configuration: a YAML file validated by pydantic, every field overridable by ``COMFYART_…`` variables
(nested fields with ``__``: ``COMFYART_POOL__MIN_CONTAINERS=2``). ``REDIS_URL`` is honoured too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .scheduling import Order, Strategy


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    """Where the API listens."""

    host: str = Field("127.0.0.1", description="listen address; with auth off only loopback is allowed")
    port: int = Field(8100, ge=0, le=65535, description="listen port")
    public_url: str | None = Field(None, description="how clients reach this daemon (e.g. behind a proxy), for "
                                                        "the output URLs in webhooks; default http://host:port")

    def public_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class DashboardConfig(_Section):
    """The web dashboard at ``/`` and the history its charts draw."""

    enabled: bool = Field(True, description="serve the dashboard at / (its files hold no data: the API it calls "
                                            "checks credentials)")
    stats_interval_s: float = Field(10.0, ge=0.1, le=3600, description="how often queue depth and finished tasks "
                                                                       "are sampled for the charts")
    stats_keep_s: float = Field(24 * 3600.0, ge=60, le=30 * 24 * 3600,
                                description="how long samples are kept (in Redis, about 100 bytes each)")


class WebhooksConfig(_Section):
    """Deliveries of finished tasks to their ``webhook`` URL."""

    secret: SecretStr | None = Field(None, description="signs each delivery: X-Comfyart-Signature is "
                                                          "sha256=HMAC-SHA256(secret, body) in hex")
    timeout_s: float = Field(10.0, gt=0, description="for one delivery attempt")
    max_attempts: int = Field(8, ge=1, le=100, description="attempts in all, the first included")
    backoff_s: float = Field(1.0, gt=0, description="wait before the 2nd attempt; doubled each time after")
    backoff_max_s: float = Field(600.0, gt=0, description="the longest wait between two attempts")
    allow_private_targets: bool = Field(False, description="let client keys' webhooks reach private, loopback and "
                                                           "link-local addresses (admins' always may)")


class ApiKeyConfig(_Section):
    """An API key of the configuration."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", description="the key's owner id is "
                                                                                "config:<name>")
    role: Literal["admin", "client"] = Field("client", description="admin: everything; client: its own tasks")
    key: SecretStr | None = Field(None, description="the key itself (any string of 24 characters or more)")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                      description="or its SHA-256 in hex, to keep the key out of the file")
    max_queued: int | None = Field(None, ge=0, description="overrides auth.quotas.max_queued for this key")
    submissions_per_minute: float | None = Field(None, ge=0, description="overrides the quota's rate")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.name}: give either key or key_sha256")
        if self.key is not None and len(self.key.get_secret_value()) < 24:
            raise ValueError(f"key {self.name}: a key needs 24 characters or more")
        return self


class QuotaConfig(_Section):
    """Each client key's limits (a key may set its own); admins have none."""

    max_queued: int = Field(1000, ge=0, description="a client's tasks pending or running at once; 0: no limit")
    submissions_per_minute: float = Field(600.0, ge=0, description="a client's sustained submission rate; 0: no "
                                                                   "limit")
    burst: int = Field(60, ge=1, description="submissions a client may make at once above the rate")


class AuthConfig(_Section):
    """Who may call the API: keys, roles, the admin user, quotas, signed links."""

    enabled: bool | None = Field(None, description="omitted: on when any key or the admin user is configured")
    keys: list[ApiKeyConfig] = Field(default_factory=list, description="more are made with `comfyart keys create` "
                                                                        "or POST /api/keys")
    admin_user: str | None = Field(None, description="basic-auth user with the admin role (the dashboard)")
    admin_password: SecretStr | None = Field(None, description="12 characters or more; better given as "
                                                                  "COMFYART_AUTH__ADMIN_PASSWORD")
    allow_unauthenticated: bool = Field(False, description="serve with auth off on an address other than "
                                                           "loopback: anyone who reaches it controls the pool")
    url_secret: SecretStr | None = Field(None, description="signs shareable output URLs; omitted: a random "
                                                              "one kept in Redis")
    signed_url_ttl_s: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600,
                                  description="default life of a signed output URL (webhooks carry them)")
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)

    @model_validator(mode="after")
    def _user_and_password(self) -> AuthConfig:
        if (self.admin_user is None) != (self.admin_password is None):
            raise ValueError("auth.admin_user and auth.admin_password go together")
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 12:
            raise ValueError("auth.admin_password needs 12 characters or more")
        names = [k.name for k in self.keys]
        if len(names) != len(set(names)):
            raise ValueError("auth key names must be unique")
        return self

    @property
    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.keys) or self.admin_user is not None


class LimitsConfig(_Section):
    """What one request may send."""

    max_body_bytes: int = Field(32 << 20, ge=1024, description="a request body (JSON); larger answers 413")
    max_upload_bytes: int = Field(64 << 20, ge=1024, description="an uploaded image")
    max_json_depth: int = Field(64, ge=4, le=1000, description="nesting of any JSON a request sends")
    max_graph_nodes: int = Field(5000, ge=1, description="nodes in one prompt graph")


class RedisConfig(_Section):
    """Where task records, the queue, workflows and keys live."""

    url: str | None = Field(None, description="omitted: an embedded Redis under data_dir")
    prefix: str = Field("comfyart", description="prefix of every key comfyart writes")


TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]


def _tags_field() -> Any:
    return Field(default_factory=list, description="capabilities a task can require (e.g. video, sdxl, gpu:a100)")


def _weight_field() -> Any:
    return Field(1.0, gt=0, le=1000, description="share of the work under the weighted strategy")


def _check_ports(ports: tuple[int, int]) -> tuple[int, int]:
    low, high = ports
    if not (0 < low <= high <= 65535):
        raise ValueError(f"port range {low}-{high} must satisfy 0 < low <= high <= 65535")
    return ports


class DockerHostConfig(_Section):
    """One Docker engine and what it may run."""

    name: str = Field(description="names the host in container names and backend ids")
    url: str = Field("unix:///var/run/docker.sock", description="the engine's API: unix:// or tcp://")
    address: str = Field("127.0.0.1", description="address the host's containers listen on / are reached at")
    ports: tuple[int, int] = Field(description="the range containers listen on, both ends included")
    gpus: list[int] = Field(default_factory=list, description="one container per GPU; empty: no GPU pinning")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()

    _ports = field_validator("ports")(_check_ports)


class DockerConfig(_Section):
    """ComfyUI containers comfyart starts itself."""

    image: str = Field(description="any image that runs ComfyUI")
    command: list[str] = Field(default_factory=lambda: ["python", "main.py", "--listen", "{address}",
                                                        "--port", "{port}"],
                               description="{address}, {port} and {gpu} are filled in")
    network: Literal["host", "bridge"] = Field("host", description="host: ComfyUI listens on {address}:{port}; "
                                                                   "bridge: container_port is published on {port}")
    container_port: int = Field(8188, description="the port ComfyUI listens on inside a bridge-networked container")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every container")
    volumes: list[str] = Field(default_factory=list, description="HOST:CONTAINER[:ro] mounts, e.g. the models")
    startup_timeout: float = Field(120.0, gt=0, description="seconds a new container has to answer /system_stats")
    leftovers: Literal["adopt", "remove"] = Field(
        "adopt", description="what to do at start-up with running containers an earlier run created")
    hosts: list[DockerHostConfig] = Field(default_factory=list, description="the engines to run containers on")

    @model_validator(mode="after")
    def _unique_host_names(self) -> DockerConfig:
        names = [h.name for h in self.hosts]
        if len(names) != len(set(names)):
            raise ValueError("docker host names must be unique")
        return self


class ProcessConfig(_Section):
    """ComfyUI processes comfyart starts on this machine (a workstation without Docker)."""

    command: list[str] = Field(default_factory=lambda: ["python", "-m", "comfyart.emulator", "--host", "{address}",
                                                        "--port", "{port}"],
                               description="{address}, {port}, {gpu} and {python} are filled in")
    address: str = Field("127.0.0.1", description="address the processes listen on")
    ports: tuple[int, int] = Field((8300, 8399), description="the range they listen on, both ends included")
    gpus: list[int] = Field(default_factory=list, description="one process per GPU (CUDA_VISIBLE_DEVICES)")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every process")
    startup_timeout: float = Field(60.0, gt=0, description="seconds a new process has to answer /system_stats")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()

    _ports = field_validator("ports")(_check_ports)


class PoolConfig(_Section):
    """How many containers (or processes) run, and how their health is judged."""

    min_containers: int = Field(1, ge=0, description="always running, even with an empty queue")
    max_containers: int = Field(4, ge=0, description="never more, whatever the queue")
    tasks_per_container: float = Field(
        2.0, gt=0, description="the autoscaler wants one container per this many tasks, queued or running")
    scale_up_cooldown_s: float = Field(10.0, ge=0, description="after starting containers, wait this long before "
                                                               "starting more (the minimum is kept regardless)")
    scale_down_cooldown_s: float = Field(60.0, ge=0, description="between two scale-downs")
    idle_timeout_s: float = Field(300.0, ge=0, description="a container idle this long may be drained and stopped")
    max_tasks: int = Field(0, ge=0, description="recycle a container after this many tasks; 0: never")
    max_age_s: float = Field(0, ge=0, description="recycle a container after this long; 0: never")
    health_interval_s: float = Field(5.0, gt=0, description="between two health checks of a backend")
    health_timeout_s: float = Field(15.0, gt=0, description="generous: ComfyUI's HTTP stalls while previews stream")
    unhealthy_threshold: int = Field(3, ge=1, description="failed checks in a row that make a backend unhealthy")
    healthy_threshold: int = Field(1, ge=1, description="good checks in a row that bring it back")
    replace_unhealthy_after_s: float = Field(60.0, ge=0, description="a container unhealthy this long is replaced")

    @model_validator(mode="after")
    def _min_below_max(self) -> PoolConfig:
        if self.min_containers > self.max_containers:
            raise ValueError(f"min_containers ({self.min_containers}) exceeds max_containers ({self.max_containers})")
        return self


class StaticBackendConfig(_Section):
    """A ComfyUI someone else runs."""

    name: str = Field(description="its backend id is static:<name>")
    url: str = Field(description="http(s)://host:port of its ComfyUI")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class TrackingConfig(_Section):
    """Following prompts on their backends."""

    silence_s: float = Field(10.0, gt=0, description="a busy backend's socket silent this long: check /history")
    submit_timeout_s: float = Field(30.0, gt=0, description="for POST /prompt and other short requests")
    download_timeout_s: float = Field(300.0, gt=0, description="for one output file")
    task_timeout_s: float = Field(3600.0, gt=0, description="a prompt unfinished this long after its submission is "
                                                             "interrupted and retried elsewhere")
    max_retries: int = Field(2, ge=0, description="retries of a task after faults of its backend (lost, timed "
                                                  "out, unreachable), each on another backend where one is free")
    claim_lease_s: float = Field(30.0, gt=0, description="a task claimed from the queue but not submitted within "
                                                         "this long goes back to the queue")
    progress_interval_s: float = Field(0.25, gt=0, le=10, description="a running task's progress is written to its "
                                                                      "record at most this often")


class SchedulerConfig(_Section):
    """Which task goes to which backend, and when (changeable at run time: PUT /api/scheduler)."""

    strategy: Strategy = Field(Strategy.LEAST_BUSY, description="least_busy, round_robin, weighted or affinity")
    order: Order = Field(Order.FIFO, description="within a priority level: fifo, or longest_first (the most "
                                                 "expensive graphs of the window first: shortest makespan)")
    prefetch: int = Field(1, ge=0, le=16, description="prompts queued on a busy backend beyond the running one")
    lookahead: int = Field(32, ge=1, le=1000, description="queued tasks considered at each dispatch: tasks "
                                                          "behind one that cannot run yet go ahead")
    priority_ageing_s: float = Field(300.0, ge=0, description="a waiting task gains one priority level per this "
                                                              "long; 0: strict priority")
    affinity_max_skips: int = Field(16, ge=0, description="affinity may run later tasks before one this many times")


class WorkflowsConfig(_Section):
    """Stored workflows loaded from files."""

    directory: Path | None = Field(
        None, description="workflow files loaded at start-up (NAME-api.json, NAME.json, NAME.params.yaml); "
                          "newer edits made through the API are kept")


class S3Config(_Section):
    """Object storage for outputs."""

    endpoint_url: str | None = Field(None, description="of an S3-compatible service; omitted: AWS")
    bucket: str = Field(description="must exist; checked at start-up")
    prefix: str = Field("comfyart/", description="before every object key (then TASK_ID/FILENAME)")
    region: str | None = Field(None, description="omitted: boto3's usual sources")
    access_key_id: str | None = Field(None, description="omitted: boto3's usual sources (environment, profile)")
    secret_access_key: SecretStr | None = Field(None, description="better given as "
                                                                     "COMFYART_OUTPUTS__S3__SECRET_ACCESS_KEY")
    presign_expires_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600,
                                   description="life of the presigned URLs put in task records")


class OutputsConfig(_Section):
    """Where downloaded outputs are kept."""

    storage: Literal["local", "s3"] = Field("local", description="local: under data_dir/outputs; s3: object storage "
                                                                 "(each file is downloaded, uploaded, then removed)")
    s3: S3Config | None = Field(None, description="needed with storage: s3")

    @model_validator(mode="after")
    def _s3_given(self) -> OutputsConfig:
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("outputs.storage s3 needs an outputs.s3 section (bucket, endpoint_url, credentials)")
        return self


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
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

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
        return self


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each offending field: ``pool.min_containers: Input should be ...``."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{_field_path(error['loc'])}: {message}")
    return "; ".join(parts)


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
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
