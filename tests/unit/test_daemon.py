"""The daemon's own process tunes its garbage collector once serving (daemon.tune_gc), and says why it cannot
listen (api.listener.listen_problem)."""
from __future__ import annotations

import json
import subprocess
import sys
from errno import EACCES, EADDRINUSE, EADDRNOTAVAIL, EPERM

from comfyart.api.listener import listen_problem
from comfyart.daemon import no_backend_warning
from tests.support.paths import ROOT


def test_tune_gc_freezes_what_start_up_made_and_collects_young_objects_less_often():
    # in a process of its own: a frozen heap would stay frozen for the rest of the test run
    script = ("import gc, json; from comfyart.daemon import GC_GEN0_THRESHOLD, tune_gc; before = gc.get_threshold(); "
              "tune_gc(); print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold(), GC_GEN0_THRESHOLD]))")
    frozen, before, after, gen0 = json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                                                            capture_output=True, text=True).stdout)
    assert frozen > 10_000  # the imported modules and what they made
    assert after == [gen0, *before[1:]] and gen0 > before[0]


def test_listen_problem_says_why_and_what_to_change():
    assert listen_problem("127.0.0.1", 8100, EADDRINUSE, "Address already in use") == (
        "cannot listen on 127.0.0.1:8100: address already in use (another comfyart serve? set server.port, e.g. "
        "COMFYART_SERVER__PORT=8101 comfyart serve ...)")
    for code in (EACCES, EPERM):
        assert listen_problem("0.0.0.0", 80, code, "Permission denied") == (
            "cannot listen on 0.0.0.0:80: permission denied (ports below 1024 need privileges: set server.port)")
    assert listen_problem("::1", 8100, EADDRNOTAVAIL, "Cannot assign requested address") == (
        "cannot listen on [::1]:8100: cannot assign requested address (check server.host and server.port)")
    assert listen_problem("nohost.invalid", 8100, -2, "Name or service not known") == (
        "cannot listen on nohost.invalid:8100: name or service not known (check server.host and server.port)")


def test_no_backend_warning_only_when_nothing_could_run_a_task():
    assert no_backend_warning(True, False) is None and no_backend_warning(False, True) is None
    assert no_backend_warning(True, True) is None
    assert no_backend_warning(False, False) == (
        "no backends: the configuration names none (docker.hosts, processes, static_backends) and none was registered "
        "(POST /api/pool/backends); tasks wait until one is. config/demo.yaml runs two emulated ComfyUIs")


async def test_a_root_that_swallowed_its_cancel_is_cancelled_again_until_it_ends():
    """A cancel that meets a Redis call can be lost there (redis-py on Python 3.11): the root task is cancelled
    again, so the daemon's stop never waits on a loop that carries on."""
    import asyncio

    from comfyart.daemon import _root
    from tests.support.loops import deaf_loop

    swallowed: list[bool] = []
    root = asyncio.get_running_loop().create_task(_root("deaf", deaf_loop(swallowed)(), asyncio.Event()))
    await asyncio.sleep(0.01)
    root.cancel()
    done, _ = await asyncio.wait({root}, timeout=5)
    assert done == {root} and root.cancelled() and swallowed == [True]
