"""Where the backends come from and how many run: Docker hosts, local processes, static URLs, the pool's
size and health rules."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from comfyart.config.sections import Section

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


class DockerHostConfig(Section):
    """One Docker engine and what it may run."""

    name: str = Field(description="names the host in container names and backend ids")
    url: str = Field("unix:///var/run/docker.sock", description="the engine's API: unix:// or tcp://")
    address: str = Field("127.0.0.1", description="address the host's containers listen on / are reached at")
    ports: tuple[int, int] = Field(description="the range containers listen on, both ends included")
    gpus: list[int] = Field(default_factory=list, description="one container per GPU; empty: a host without GPUs "
                                                              "(no device request)")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()
    image: str | None = Field(None, description="this host's image instead of docker.image (a ComfyUI with other "
                                                "custom nodes); omitted: docker.image")
    volumes: list[str] = Field(
        default_factory=list, description="HOST:CONTAINER[:ro] mounts of this host's containers, added to "
                                          "docker.volumes; one at a CONTAINER path docker.volumes also mounts replaces "
                                          "that one (this host's models folder)")

    _ports = field_validator("ports")(_check_ports)


class DockerConfig(Section):
    """ComfyUI containers comfyart starts itself."""

    image: str = Field(description="any image that runs ComfyUI")
    command: list[str] = Field(default_factory=lambda: ["python", "main.py", "--listen", "{address}",
                                                        "--port", "{port}"],
                               description="{address}, {port}, {gpu} and {python} are filled in, also "
                                           "inside an argument (/out/{port})")
    working_dir: str | None = Field(None, description="the directory the command runs in (ComfyUI's, for python "
                                                      "main.py); omitted: the image's WORKDIR")
    network: Literal["host", "bridge"] = Field("host", description="host: ComfyUI listens on {address}:{port}; "
                                                                   "bridge: container_port is published on {port}")
    container_port: int = Field(8188, description="the port ComfyUI listens on inside a bridge-networked container")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every container")
    volumes: list[str] = Field(default_factory=list, description="HOST:CONTAINER[:ro] mounts of every host's "
                                                                 "containers, e.g. the models (a host's own add to "
                                                                 "them)")
    startup_timeout: float = Field(120.0, gt=0, description="seconds a new container has to answer /system_stats")
    leftovers: Literal["adopt", "remove"] = Field(
        "adopt", description="what to do at start-up with running containers an earlier run created")
    hosts: list[DockerHostConfig] = Field(default_factory=list, description="the engines to run containers on")

    @field_validator("working_dir")
    @classmethod
    def _absolute(cls, working_dir: str | None) -> str | None:
        if working_dir is not None and not working_dir.startswith("/"):
            raise ValueError("must be an absolute path inside the image (Docker refuses a relative one)")
        return working_dir

    @model_validator(mode="after")
    def _unique_host_names(self) -> DockerConfig:
        names = [h.name for h in self.hosts]
        if len(names) != len(set(names)):
            raise ValueError("docker host names must be unique")
        return self


class ProcessConfig(Section):
    """ComfyUI processes comfyart starts on this machine (a workstation without Docker)."""

    command: list[str] = Field(default_factory=lambda: ["python", "-m", "comfyart.emulator", "--host", "{address}",
                                                        "--port", "{port}"],
                               description="{address}, {port}, {gpu} and {python} are filled in, also "
                                           "inside an argument (/out/{port})")
    working_dir: Path | None = Field(None, description="the directory the command runs in (ComfyUI's, for python "
                                                       "main.py); omitted: the daemon's")
    address: str = Field("127.0.0.1", description="address the processes listen on")
    ports: tuple[int, int] = Field((8300, 8399), description="the range they listen on, both ends included")
    gpus: list[int] = Field(default_factory=list, description="one process per GPU (CUDA_VISIBLE_DEVICES); "
                                                              "empty: a machine without GPUs")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every process")
    startup_timeout: float = Field(60.0, gt=0, description="seconds a new process has to answer /system_stats")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()

    _ports = field_validator("ports")(_check_ports)


class PoolConfig(Section):
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
    inventory_refresh_s: float = Field(
        60.0, ge=0, description="read every healthy backend's node classes and model lists (/object_info) again this "
                                "often, so a model copied onto one is seen without a restart; 0: only when it "
                                "becomes healthy, rejects a prompt, or on demand (POST /api/pool/refresh)")
    health_timeout_s: float = Field(15.0, gt=0, description="generous: ComfyUI's HTTP stalls while previews stream")
    unhealthy_threshold: int = Field(3, ge=1, description="failed checks in a row that make a backend unhealthy")
    healthy_threshold: int = Field(1, ge=1, description="good checks in a row that bring it back")
    replace_unhealthy_after_s: float = Field(60.0, ge=0, description="a container unhealthy this long is replaced")
    static_lost_after_s: float = Field(
        30.0, ge=0, description="a static backend made unhealthy by its health checks, with neither a good check nor "
                                "a WebSocket frame for this long, loses its prompts: they are requeued elsewhere, "
                                "and taken off it when it answers again; more than health_timeout_s + "
                                "health_interval_s; 0: never (they wait for tracking.task_timeout_s)")

    @model_validator(mode="after")
    def _min_below_max(self) -> PoolConfig:
        if self.min_containers > self.max_containers:
            raise ValueError(f"min_containers ({self.min_containers}) exceeds max_containers ({self.max_containers})")
        return self

    @model_validator(mode="after")
    def _lost_after_a_whole_check(self) -> PoolConfig:
        # one slow check alone leaves a backend silent for up to timeout + interval: that must not lose its prompts
        window = self.health_timeout_s + self.health_interval_s
        if self.static_lost_after_s and self.static_lost_after_s <= window:
            raise ValueError(f"static_lost_after_s ({self.static_lost_after_s:g}) must exceed health_timeout_s + "
                             f"health_interval_s ({self.health_timeout_s:g} + {self.health_interval_s:g}), or be 0")
        return self


class StaticBackendConfig(Section):
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


DNS_NAME_PATTERN = r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$"


class DnsBackendConfig(Section):
    """ComfyUIs found by a DNS name (a Kubernetes headless Service): one backend per address it resolves to, each
    run by someone else, as a static backend is. Looked up by the leader every interval_s."""

    name: Annotated[str, StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)] = Field(
        description="the name resolved (A and AAAA records), e.g. comfyui.gpu.svc.cluster.local; its backends' ids "
                    "are dns:<name>:<address>")
    port: int = Field(8188, ge=1, le=65535, description="the port ComfyUI listens on at every address")
    scheme: Literal["http", "https"] = Field("http", description="how every address is spoken to")
    path: str | None = Field(None, pattern=r"^/[^\s?#]*$", description="a path prefix ComfyUI is served under, "
                                                                        "e.g. /comfyui; omitted: none")
    tags: list[Tag] = _tags_field()
    weight: float = _weight_field()
    interval_s: float = Field(5.0, gt=0, description="between two lookups")
    nameserver: str | None = Field(
        None, description="the DNS server asked, IP[:PORT] ([IPv6]:PORT); omitted: the system's (/etc/resolv.conf)")
    timeout_s: float = Field(3.0, gt=0, description="a lookup that takes longer failed (the backends are kept)")
    empty_grace_s: float = Field(
        30.0, ge=0, description="a name that resolves to no address (NXDOMAIN, no record) for this long drains its "
                                "backends (scaled to zero); shorter, it is taken for a blip and they are kept")

    @field_validator("nameserver")
    @classmethod
    def _nameserver(cls, nameserver: str | None) -> str | None:
        if nameserver is not None:
            parse_nameserver(nameserver)  # ValueError: the configuration is refused
        return nameserver

    def nameserver_address(self) -> tuple[str, int] | None:
        return None if self.nameserver is None else parse_nameserver(self.nameserver)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address: (address, port); ValueError otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"nameserver {text!r}: expected [IPv6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: not an IP address (IP[:PORT], [IPv6]:PORT)") from None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"nameserver {text!r}: port must be 1..65535")
    return str(address), int(port)
