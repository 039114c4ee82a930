"""What the pool needs from a way of running ComfyUI backends (Docker hosts, local processes)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from comfyart.policy.placement import Placement


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    ports: tuple[int, int]
    gpus: tuple[int, ...]
    tags: frozenset[str] = frozenset()
    weight: float = 1.0
    image: str = ""  # what its containers run ("" for processes): a leftover running another is not adopted


@dataclass(frozen=True)
class Spawned:
    """A backend a provider started (or found from an earlier run)."""

    kind: str
    host: str
    address: str
    port: int
    gpu: int | None
    handle: str  # container id, or process id
    name: str
    running: bool = True
    image: str = ""

    @property
    def backend_id(self) -> str:
        return f"{self.kind}:{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


class Provider(Protocol):
    @property
    def kind(self) -> str:
        """"docker" or "process": the first part of its backends' ids."""

    @property
    def hosts(self) -> Sequence[HostSpec]: ...

    @property
    def startup_timeout_s(self) -> float: ...

    @property
    def image(self) -> str:
        """What a leftover must run to be adopted unless its host names its own ("" when any will do)."""

    async def spawn(self, placement: Placement) -> Spawned:
        """Create and start a backend; raises ContainerFailed with the reason when it cannot start."""

    async def check(self, backend: Spawned) -> str | None:
        """None while the backend's process/container runs; else why it stopped, with its last log lines."""

    async def remove(self, backend: Spawned) -> None:
        """Stop and delete; a backend that is already gone is not an error."""

    async def leftovers(self) -> list[Spawned]:
        """Backends an earlier run of this comfyart instance left behind."""

    async def ping(self, host: str) -> None:
        """Raises DockerUnavailable (or the like) when the host cannot be reached."""

    async def logs(self, backend: Spawned, lines: int = 20) -> str: ...

    async def close(self) -> None: ...


# read left to right: a doubled brace, or a placeholder
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(address|port|gpu|python)\}")


def render_command(template: Sequence[str], *, address: str, port: int, gpu: int | None, python: str) -> list[str]:
    """The command with ``{address}``, ``{port}``, ``{gpu}`` (empty without one) and ``{python}`` filled in wherever
    they appear in an argument (``--output-directory /out/{port}``). ``{{`` and ``}}`` are one literal brace, as
    under the ``str.format`` that commands were once filled in with (``${{VAR}}`` in ``sh -c`` gives ``${VAR}``,
    ``{{port}}`` gives ``{port}``); any other brace stays as written (a lone ``${VAR}``, ``{unknown}``)."""
    values = {"address": address, "port": str(port), "gpu": "" if gpu is None else str(gpu), "python": python}

    def fill(match: re.Match[str]) -> str:
        return values[match[1]] if match[1] else match[0][0]

    return [PLACEHOLDER.sub(fill, part) for part in template]
