"""The daemon's own process tunes its garbage collector once serving (daemon.tune_gc)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT


def test_tune_gc_freezes_what_start_up_made_and_collects_young_objects_less_often():
    # in a process of its own: a frozen heap would stay frozen for the rest of the test run
    script = ("import gc, json; from comfyart.daemon import GC_GEN0_THRESHOLD, tune_gc; before = gc.get_threshold(); "
              "tune_gc(); print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold(), GC_GEN0_THRESHOLD]))")
    frozen, before, after, gen0 = json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                                                            capture_output=True, text=True).stdout)
    assert frozen > 10_000  # the imported modules and what they made
    assert after == [gen0, *before[1:]] and gen0 > before[0]
