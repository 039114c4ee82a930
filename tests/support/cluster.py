"""Replicas under test (issue 24): ``running_replica`` is ``running_daemon`` that also yields the built ``Daemon``
(its registry on ``daemon.replica`` and ``services.replica``), optionally with the role its heartbeat reports
overridden (``leading``), for a test of what a standby shows while the lease itself names this process."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from comfyart.config.settings import Settings
from tests.support.daemon import running_daemon


@asynccontextmanager
async def running_replica(settings: Settings, *, leading: Callable[[], bool] | None = None,
                          ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """``running_daemon``; yields the HTTP client and the built ``Daemon``."""
    from comfyart import daemon

    original, built = daemon.build, []

    async def build(*args: Any, **kwargs: Any) -> Any:
        made = await original(*args, **kwargs)
        if leading is not None:
            made.replica.heartbeat.leading = leading
        built.append(made)
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daemon, "build", build)
        async with running_daemon(settings) as client:
            yield client, built[0]
