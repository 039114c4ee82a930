"""When the socket alone settles a prompt (tracker.reactions): its outputs are taken from the ``executed`` events it
saw only when it saw the whole run, start to success on one connection, with no output node served from cache
(an older ComfyUI may report a cached output without a fresh ``executed``); otherwise /history is asked."""
from __future__ import annotations

import itertools

import pytest

from comfyart.comfy.protocol import Executed, Executing, ExecutionCached, ExecutionStart, ExecutionSuccess
from comfyart.tracker.prompts import PromptState
from comfyart.tracker.reactions import Settle, react

SAVED = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}


def run(cached: list[str], output_nodes: frozenset[str] | None, *, same_connection: bool = True,
        success: bool = True) -> Settle:
    """A prompt of nodes 1 (loader), 2 (sampler), 9 (SaveImage) through its events; the final reaction."""
    state = PromptState("t", total_nodes=3, backend=None, output_nodes=output_nodes)  # type: ignore[arg-type]
    react(state, ExecutionStart("p"), epoch=1, now=0)
    react(state, ExecutionCached("p", cached), epoch=1, now=0)
    for node in ("1", "2", "9"):
        if node not in cached:
            react(state, Executing("p", node), epoch=1, now=0)
    react(state, Executed("p", "9", SAVED), epoch=1, now=0)  # a cached output node's, from a newer ComfyUI
    if success:
        react(state, ExecutionSuccess("p"), epoch=1, now=0)
    end = react(state, Executing("p", None), epoch=1 if same_connection else 2, now=0)
    assert isinstance(end, Settle)
    return end


OUTPUTS = frozenset({"9"})


@pytest.mark.parametrize(("cached", "output_nodes", "trusted"), [
    ([], None, True),  # nothing cached: every executed came live
    ([], OUTPUTS, True),
    (["1"], OUTPUTS, True),  # a workflow run with a new seed: its loader cached, its output ran
    (["1", "2"], OUTPUTS, True),
    (["1"], None, False),  # what is an output here is unknown: ask /history
    (["9"], OUTPUTS, False),  # the output itself came from cache
    (["1", "2", "9"], OUTPUTS, False),  # a fully cached re-run
    (["1"], frozenset(), True),  # a graph without output node on this backend
])
def test_the_socket_settles_a_run_whose_outputs_all_ran(cached, output_nodes, trusted):
    assert run(cached, output_nodes).outputs == ({"9": SAVED} if trusted else None)


@pytest.mark.parametrize(("cached", "same_connection", "success"),
                         itertools.product([[], ["1"]], [True, False], [True, False]))
def test_a_run_seen_in_part_is_always_looked_up(cached, same_connection, success):
    end = run(cached, OUTPUTS, same_connection=same_connection, success=success)
    assert (end.outputs is not None) == (same_connection and success)
