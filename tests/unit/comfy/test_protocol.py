"""Protocol parsing, checked against every frame and history entry recorded from real ComfyUI."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from comfyart.comfy import protocol
from comfyart.comfy.protocol import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
    StatusEvent,
    graph_problem,
    parse_frame,
)
from tests.support.paths import SHARED

TRANSCRIPTS = SHARED / "comfyui" / "transcripts"


def events(name: str) -> list[dict]:
    return json.loads((TRANSCRIPTS / name).read_text())["events"]


def all_text_frames() -> Iterator[dict]:
    for path in sorted(TRANSCRIPTS.glob("*.json")):
        for event in json.loads(path.read_text())["events"]:
            if event["kind"] == "ws_recv" and event.get("frame") == "text":
                yield event["json"]


def history_entries(name: str) -> list[dict]:
    entries = []
    for event in events(name):
        if event["kind"] == "http" and event["path"].startswith("/history/") and event.get("response_json"):
            entries.extend(event["response_json"].values())
    return entries


def test_every_recorded_frame_parses_to_its_type():
    kinds = {"status": StatusEvent, "execution_start": ExecutionStart, "execution_cached": ExecutionCached,
             "executing": Executing, "progress": Progress, "executed": Executed,
             "execution_success": ExecutionSuccess, "execution_error": ExecutionError,
             "execution_interrupted": ExecutionInterrupted}
    seen = set()
    for frame in all_text_frames():
        parsed = protocol.parse_frame(json.dumps(frame))
        expected = kinds.get(frame["type"])
        if expected is None:
            assert parsed is None, frame  # progress_state, feature_flags: not used by the tracker
        else:
            assert isinstance(parsed, expected), frame
            seen.add(frame["type"])
    assert seen == set(kinds)  # the transcripts exercise every kind


def test_frame_kind_reads_the_type_comfyui_writes_first():
    for frame in all_text_frames():  # ComfyUI sends json.dumps({"type": ..., "data": ...})
        assert protocol.frame_kind(json.dumps(frame)) == frame["type"]
        assert protocol.frame_kind(json.dumps({"type": frame["type"], "data": frame["data"]})) == frame["type"]


@pytest.mark.parametrize("text", ['{"data": {}, "type": "status"}', '{"type":"status","data":{}}', "not json", "",
                                  '{"type": "stat\\"us", "data": {}}', '{"type": "unterminated',
                                  ' {"type": "status", "data": {}}'])
def test_frame_kind_is_none_unless_the_frame_starts_as_comfyuis_do(text):
    # None means "parse it whole": a frame written some other way is never skipped unread
    assert protocol.frame_kind(text) is None


def test_end_marker_and_reconnect_variant():
    assert protocol.parse_frame('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}') == \
        Executing("p", None)
    assert protocol.parse_frame('{"type": "executing", "data": {"node": "2"}}') == Executing(None, "2")


@pytest.mark.parametrize("text", ["not json", "[]", '{"type": "progress"}', '{"type": "progress", "data": []}',
                                  '{"type": "progress", "data": {"prompt_id": "p", "value": "x", "max": 2}}',
                                  '{"type": "status", "data": {}}', '{"type": "execution_start", "data": {}}'])
def test_garbage_frames_are_ignored(text):
    assert protocol.parse_frame(text) is None


def test_execution_error_keeps_comfyuis_message():
    [frame] = [f for f in all_text_frames() if f["type"] == "execution_error"][:1]
    parsed = protocol.parse_frame(json.dumps(frame))
    assert isinstance(parsed, ExecutionError)
    assert parsed.node_type == "SaveImage" and "outside the output folder" in parsed.exception_message


def test_history_outcome_of_success_error_and_interrupt():
    [success] = history_entries("01_success_basic.json")
    outcome = protocol.history_outcome(success)
    assert outcome.finished and outcome.succeeded and "3" in outcome.outputs
    failed = history_entries("05_runtime_error.json")[0]
    outcome = protocol.history_outcome(failed)
    assert outcome.finished and not outcome.succeeded
    assert outcome.error.startswith("Exception in node 3 (SaveImage)")
    interrupted = history_entries("09_interrupt.json")[0]
    outcome = protocol.history_outcome(interrupted)
    assert not outcome.succeeded and outcome.error.startswith("interrupted at node")
    assert protocol.history_outcome(None) == protocol.HistoryOutcome(finished=False)


def test_output_refs_cover_every_file_kind_but_temp_previews():
    [entry] = history_entries("15_output_kinds.json")
    refs = protocol.output_refs(entry["outputs"])
    names = sorted(r.filename for r in refs)
    assert names == ["anim_00001_.webp", "apng_00001_.png", "kinds_00001_.png", "kinds_00002_.png",
                     "video_00001_.mp4"]
    assert all(r.type == "output" and r.subfolder == "proto" for r in refs)


def test_output_refs_of_a_cached_rerun_come_from_history():
    entries = history_entries("02_cached_rerun.json")
    cached = [e for e in entries if e["status"]["messages"][1][1]["nodes"] == ["1", "2", "3"]][0]
    [ref] = protocol.output_refs(cached["outputs"])
    assert ref.filename == "basic_00001_.png"


@pytest.mark.parametrize("prompt, problem", [
    ({"1": {"class_type": "X", "inputs": {}}}, None),
    ({"1": {"class_type": "X"}}, None),
    ([], "prompt must be a JSON object"),
    ("graph", "prompt must be a JSON object"),
    ({}, "prompt has no nodes"),
    ({"1": 5}, "node '1' must be an object"),
    ({"1": {"inputs": {}}}, "node '1' has no class_type"),
    ({"1": {"class_type": "", "inputs": {}}}, "node '1' has no class_type"),
    ({"1": {"class_type": "X", "inputs": [1]}}, "node '1': inputs must be an object"),
])
def test_graph_problem(prompt: Any, problem):
    found = protocol.graph_problem(prompt)
    assert (found is None) if problem is None else found.startswith(problem)


def test_prompt_in_queue_reads_running_and_pending():
    queues = [e["response_json"] for e in events("10_queue_management.json")
              if e["kind"] == "http" and e["path"] == "/queue" and e.get("response_json", {}).get("queue_pending")]
    queue = queues[0]
    pending_id = queue["queue_pending"][0][1]
    running_id = queue["queue_running"][0][1]
    assert protocol.prompt_in_queue(queue, pending_id) and protocol.prompt_in_queue(queue, running_id)
    assert not protocol.prompt_in_queue(queue, "nope")


@pytest.mark.parametrize("count, problem", [(3, None), (4, "prompt has 4 nodes; at most 3 are allowed")])
def test_graph_node_count(count, problem):
    graph = {str(i): {"class_type": "X", "inputs": {}} for i in range(count)}
    assert graph_problem(graph, max_nodes=3) == problem


@pytest.mark.parametrize("frame", [
    "not json", "[1]", '{"type": "progress", "data": "x"}', "[" * 100_000 + "]" * 100_000,
    '{"type": "progress", "data": {"prompt_id": ["a"], "value": 1, "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": ["x"], "value": 1, "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": "1", "value": "lots", "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": "1", "value": 1e999, "max": 2}}',
    '{"type": "executing", "data": {"prompt_id": "p", "node": {"a": 1}}}',
    '{"type": "executing", "data": {"prompt_id": "p", "node": true}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": "1,2"}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": [[1]]}}',
    '{"type": "executed", "data": {"prompt_id": "p", "node": null, "output": {}}}',
    '{"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": "junk"}}',
    '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}',
    '{"type": "execution_error", "data": {"prompt_id": "p", "node_id": {"x": 1}}}',
])
def test_junk_frames_are_dropped_whole(frame):
    assert parse_frame(frame) is None


def test_good_frames_still_parse_after_the_checks():
    assert parse_frame('{"type": "executing", "data": {"prompt_id": "p", "node": 5}}') == Executing("p", "5")
    assert parse_frame('{"type": "progress", "data": {"prompt_id": "p", "node": "3", "value": 2, "max": 4}}') \
        == Progress("p", "3", 2.0, 4.0)
    executed = parse_frame('{"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": {"images": []}}}')
    assert executed == Executed("p", "9", {"images": []})


@pytest.mark.parametrize("extra_data, default, expected", [
    (None, "auto", {"preview_method": "auto"}),
    ({}, "taesd", {"preview_method": "taesd"}),
    ({"extra_pnginfo": {}}, "none", {"extra_pnginfo": {}, "preview_method": "none"}),
    ({"preview_method": "latent2rgb"}, "auto", {"preview_method": "latent2rgb"}),  # the client's own choice
    ({"preview_method": "none"}, "auto", {"preview_method": "none"}),
    (None, "default", None),  # the backend's own: nothing sent
    ({"a": 1}, "default", {"a": 1}),
    ({"preview_method": "taesd"}, "default", {"preview_method": "taesd"}),
])
def test_a_prompt_keeps_its_preview_method_or_gets_the_configured_one(extra_data, default, expected):
    from comfyart.comfy.protocol import with_preview_method

    assert with_preview_method(extra_data, default) == expected
