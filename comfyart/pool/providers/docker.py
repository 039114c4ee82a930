"""ComfyUI containers on one or more Docker hosts; the only module that imports the Docker SDK.

Every SDK call runs on a single-thread executor of its host, never on the event loop.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from comfyart.config.fleet import DockerConfig, DockerHostConfig
from comfyart.errors import ContainerFailed, DockerUnavailable
from comfyart.policy.placement import Placement
from comfyart.pool.providers.base import HostSpec, Spawned, render_command

LABEL_MANAGED = "comfyart.managed"
LABEL_INSTANCE = "comfyart.instance"


@contextmanager
def map_docker_errors(host: str) -> Iterator[None]:
    """Connection-level failures become DockerUnavailable; the daemon's own answers (APIError) pass through."""
    try:
        yield
    except docker.errors.APIError:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerUnavailable(f"Docker host {host} unavailable: {exc}") from exc


def container_path(volume: str) -> str:
    """Where a ``HOST:CONTAINER[:MODE]`` mount (or an anonymous ``CONTAINER`` one) appears in the container."""
    parts = volume.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def host_volumes(common: list[str], own: list[str]) -> list[str]:
    """The mounts of one host's containers: the docker section's, less those a mount of the host's own replaces
    (same container path), then the host's."""
    replaced = {container_path(v) for v in own}
    return [v for v in common if container_path(v) not in replaced] + list(own)


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


class DockerProvider:
    kind = "docker"

    def __init__(self, config: DockerConfig, *, instance: str) -> None:
        self.config = config
        self.instance = instance
        self.hosts = [HostSpec(h.name, h.address, h.ports, tuple(h.gpus), frozenset(h.tags), h.weight,
                               image=h.image or config.image) for h in config.hosts]
        self.startup_timeout_s = config.startup_timeout
        self.image = config.image
        self._host_configs: dict[str, DockerHostConfig] = {h.name: h for h in config.hosts}
        self._urls = {h.name: h.url for h in config.hosts}
        self._clients: dict[str, docker.DockerClient] = {}
        self._executors = {h.name: ThreadPoolExecutor(1, thread_name_prefix=f"docker-{h.name}")
                           for h in config.hosts}

    async def _call(self, host: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with map_docker_errors(host):
                if host not in self._clients:
                    self._clients[host] = docker.DockerClient(base_url=self._urls[host], timeout=60)
                return fn(self._clients[host], *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executors[host], run)

    def _name(self, host: str, port: int) -> str:
        return f"comfyart-{self.instance}-{host}-{port}"

    def image_of(self, host: str) -> str:
        """The image of ``host``'s containers: its own, else the docker section's."""
        return self._host_configs[host].image or self.config.image

    def container_options(self, placement: Placement, address: str) -> dict[str, Any]:
        """The arguments of ``containers.run`` for one placement (kept apart so tests can read them)."""
        cfg = self.config
        host = self._host_configs[placement.host]
        inner_port = placement.port if cfg.network == "host" else cfg.container_port
        command = render_command(cfg.command, address=address if cfg.network == "host" else "0.0.0.0",
                                 port=inner_port, gpu=placement.gpu, python="python3")
        environment = dict(cfg.env)
        options: dict[str, Any] = {
            "image": self.image_of(placement.host), "command": command,
            "name": self._name(placement.host, placement.port), "detach": True, "environment": environment,
            "volumes": host_volumes(cfg.volumes, host.volumes),
            "labels": {LABEL_MANAGED: "true", LABEL_INSTANCE: self.instance, "comfyart.host": placement.host,
                       "comfyart.port": str(placement.port),
                       "comfyart.gpu": "" if placement.gpu is None else str(placement.gpu)},
        }
        if cfg.working_dir is not None:
            options["working_dir"] = cfg.working_dir
        if cfg.network == "host":
            options["network_mode"] = "host"
        else:
            options["ports"] = {f"{inner_port}/tcp": (address, placement.port)}
        if placement.gpu is not None:
            # the device request exposes only that GPU, which the container then sees as device 0
            options["device_requests"] = [docker.types.DeviceRequest(device_ids=[str(placement.gpu)],
                                                                     capabilities=[["gpu"]])]
            environment["NVIDIA_VISIBLE_DEVICES"] = str(placement.gpu)
            environment["CUDA_VISIBLE_DEVICES"] = "0"
        return options

    async def spawn(self, placement: Placement) -> Spawned:
        address = next(h.address for h in self.hosts if h.name == placement.host)
        options = self.container_options(placement, address)
        name = options["name"]

        def create_and_start(client: docker.DockerClient) -> Any:
            _remove_by_name(client, name)  # a stale container of the same name would block the create
            try:
                return client.containers.run(**options)
            except docker.errors.ImageNotFound as exc:
                raise ContainerFailed(f"image {options['image']} is not on Docker host {placement.host}: "
                                      f"{_explain(exc)}") from exc
            except docker.errors.APIError as exc:
                logs = _logs_of(client, name)
                _remove_by_name(client, name)
                reason = _explain(exc)
                if "capabilities: [[gpu]]" in reason:
                    reason += (f" (GPU {placement.gpu} was requested: is the NVIDIA container toolkit installed "
                               f"on {placement.host}?)")
                raise ContainerFailed(f"container {name} on {placement.host} failed to start: {reason}", logs) from exc

        container = await self._call(placement.host, create_and_start)
        return Spawned("docker", placement.host, address, placement.port, placement.gpu, container.id, name,
                       image=options["image"])

    async def check(self, backend: Spawned) -> str | None:
        def inspect(client: docker.DockerClient) -> str | None:
            try:
                container = client.containers.get(backend.handle)
            except docker.errors.NotFound:
                return "container disappeared"
            state = container.attrs.get("State", {})
            if container.status == "running":
                return None
            reason = f"container {container.status} (exit code {state.get('ExitCode')})"
            if state.get("OOMKilled"):
                reason += ", out of memory"
            logs = _logs_of(client, backend.handle)
            return f"{reason}; last log lines:\n{logs}" if logs else reason
        result: str | None = await self._call(backend.host, inspect)
        return result

    async def remove(self, backend: Spawned) -> None:
        await self._call(backend.host, lambda client: _remove_by_name(client, backend.handle))

    async def leftovers(self) -> list[Spawned]:
        found: list[Spawned] = []
        for host in self.hosts:
            filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance}"]}
            containers = await self._call(host.name, functools.partial(_list_containers, filters=filters))
            for container in containers:
                labels = container.labels
                gpu = labels.get("comfyart.gpu")
                found.append(Spawned("docker", labels.get("comfyart.host", host.name), host.address,
                                     int(labels.get("comfyart.port", "0")), int(gpu) if gpu else None,
                                     container.id, container.name, running=container.status == "running",
                                     image=(container.attrs.get("Config") or {}).get("Image", "")))
        return found

    async def ping(self, host: str) -> None:
        await self._call(host, lambda client: client.ping())

    async def logs(self, backend: Spawned, lines: int = 20) -> str:
        result: str = await self._call(backend.host, functools.partial(_logs_of, name=backend.handle, lines=lines))
        return result

    async def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()


def _list_containers(client: docker.DockerClient, filters: dict[str, Any]) -> list[Any]:
    return client.containers.list(all=True, filters=filters)


def _remove_by_name(client: docker.DockerClient, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def _logs_of(client: docker.DockerClient, name: str, lines: int = 20) -> str:
    try:
        raw = client.containers.get(name).logs(tail=lines)
    except docker.errors.NotFound:
        return ""
    except docker.errors.APIError:
        return ""
    return raw.decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)
