"""Replicas under test (issue 24): a daemon that runs its replica registry (``cluster.replicas.join``).

The daemon's wiring of the registry lands with the leadership branch (daemon.py is that branch's); until then
``running_replica`` applies the same wiring to what ``daemon.build`` made: the registry on ``services.replica``, its
heartbeat as a root task, its figures in the metrics. Once ``build`` does it itself, this adds nothing."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from comfyart.cluster.replicas import join
from comfyart.config.settings import Settings
from tests.support.daemon import running_daemon


@asynccontextmanager
async def running_replica(settings: Settings, *, leading: Callable[[], bool] = lambda: True,
                          ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """``running_daemon`` with its replica registry; yields the HTTP client and the built ``Daemon``."""
    from comfyart import daemon

    original, built = daemon.build, []

    async def build(*args: Any, **kwargs: Any) -> Any:
        made = await original(*args, **kwargs)
        if made.services.replica is None:
            replica = join(made.settings, made.stores, leading=leading)
            made.services.replica = replica
            made.loops["heartbeat"] = replica.heartbeat.run
            if made.services.metrics is not None:
                made.services.metrics.cluster = replica.figures
        built.append(made)
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daemon, "build", build)
        async with running_daemon(settings) as client:
            yield client, built[0]
