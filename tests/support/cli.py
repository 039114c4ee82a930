"""The ``comfyart`` command run as a process of its own, the way a user runs it (the daemon under test runs in the
test's event loop)."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT


async def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, stdout: Any = None,
                    stderr: Any = None) -> asyncio.subprocess.Process:
    """``python -m comfyart ARGS`` with only ``env`` besides PATH and PYTHONPATH; its output piped unless given."""
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyart", *args, cwd=cwd, stdout=pipe if stdout is None else stdout,
        stderr=pipe if stderr is None else stderr,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})})


async def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, str, str]:
    """Run it to its end: (exit status, standard output, standard error)."""
    process = await start_cli(*args, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
