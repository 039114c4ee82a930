"""Pure parts of the ComfyUI-compatible front door, the graph validator, webhooks and the event hub."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
from urllib.parse import quote

import pytest

from comfyart.api.comfyui.catalog import merge_object_info
from comfyart.api.comfyui.shapes import (
    history_entry,
    in_history,
    job,
    public_outputs,
    public_subfolder,
    queue_item,
    rewrite_frame,
    terminal_message,
    with_metadata,
)
from comfyart.bus import EventHub
from comfyart.comfy.validate import output_nodes, validate
from comfyart.models import OutputFile, Relay, Task, TaskStatus
from comfyart.policy.rates import webhook_next_attempt
from comfyart.webhooks import payload, signature

INFO = {
    "EmptyImage": {"input": {"required": {"width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                                          "height": ["INT", {"min": 1, "max": 16384}],
                                          "color": ["INT", {"min": 0, "max": 0xFFFFFF}]}},
                   "output": ["IMAGE"], "output_node": False},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"], "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}},
                  "output": [], "output_node": True},
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"], "output_node": False},
    "Sampler": {"input": {"required": {"sampler": ["COMBO", {"options": ["euler", "ddim"]}]},
                          "optional": {"denoise": ["FLOAT", {"min": 0.0, "max": 1.0}]}},
                "output": ["LATENT"], "output_node": False},
    "PreviewAny": {"input": {"required": {"source": ["*", {}]}}, "output": [], "output_node": True},
}


def graph(**changes) -> dict:
    g = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "color": 0}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    for node, inputs in changes.items():
        g[node]["inputs"].update(inputs)
    return g


# ---------------------------------------------------------------------------------------------------- validate
def test_a_valid_graph_passes_with_its_outputs():
    verdict = validate(graph(), INFO)
    assert verdict.error is None and verdict.node_errors == {} and verdict.outputs == ["3"]


@pytest.mark.parametrize("node, expected_type, expected_message", [
    ({"class_type": "Nope", "inputs": {}}, "invalid_prompt", "Cannot execute because node Nope does not exist."),
    ({"inputs": {}}, "invalid_prompt", "Cannot execute because a node is missing the class_type property."),
])
def test_unknown_or_missing_class_types_are_invalid_prompts(node, expected_type, expected_message):
    verdict = validate({**graph(), "9": node}, INFO)
    assert verdict.error["type"] == expected_type and verdict.error["message"] == expected_message
    assert verdict.error["details"] == "Node ID '#9'"


@pytest.mark.parametrize("bad", [{}, "not a graph", {"1": graph()["1"]}])
def test_graphs_without_outputs_are_refused(bad):
    verdict = validate(bad, INFO)
    assert verdict.error["type"] in ("prompt_no_outputs", "invalid_prompt")


@pytest.mark.parametrize("node, inputs, error_type", [
    ("1", {"width": 0}, "value_smaller_than_min"),
    ("1", {"width": 20000}, "value_bigger_than_max"),
    ("1", {"width": "wide"}, "invalid_input_type"),
    ("2", {"image": ["1"]}, "bad_linked_input"),
    ("3", {"images": ["1", 5]}, None),  # a slot the producer lacks: nothing to compare, ComfyUI fails it at run time
])
def test_input_problems_are_filed_under_their_node_with_the_outputs_they_block(node, inputs, error_type):
    verdict = validate(graph(**{node: inputs}), INFO)
    if error_type is None:
        assert verdict.error is None
        return
    assert verdict.error["type"] == "prompt_outputs_failed_validation"
    entry = verdict.node_errors[node]
    assert entry["errors"][0]["type"] == error_type and entry["dependent_outputs"] == ["3"]
    assert entry["class_type"] == graph()[node]["class_type"]


def test_missing_inputs_type_mismatches_and_dangling_links():
    missing = validate({**graph(), "1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}}, INFO)
    assert missing.node_errors["1"]["errors"][0] == {"type": "required_input_missing",
                                                     "message": "Required input is missing", "details": "color",
                                                     "extra_info": {"input_name": "color"}}
    mismatch = validate({**graph(), "4": {"class_type": "Sampler", "inputs": {"sampler": "euler"}},
                         "3": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}},
                        INFO)
    assert mismatch.node_errors["3"]["errors"][0]["type"] == "return_type_mismatch"
    assert "received_type(LATENT) mismatch input_type(IMAGE)" in mismatch.node_errors["3"]["errors"][0]["details"]
    dangling = validate(graph(**{"2": {"image": ["7", 0]}}), INFO)
    assert dangling.node_errors["7"]["errors"][0]["type"] == "exception_during_inner_validation"


def test_combo_choices_old_and_v3_style_and_inputs_comfyart_delivers():
    load = {"1": {"class_type": "LoadImage", "inputs": {"image": "c.png"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert validate(load, INFO).node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    assert validate(load, INFO, also_allowed=lambda v: v == "c.png").error is None
    sampler = {"4": {"class_type": "Sampler", "inputs": {"sampler": "heun"}},
               "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    assert validate(sampler, INFO).node_errors["4"]["errors"][0]["type"] == "value_not_in_list"
    sampler["4"]["inputs"].update(sampler="ddim", denoise=2.0)
    assert validate(sampler, INFO).node_errors["4"]["errors"][0]["type"] == "value_bigger_than_max"


def test_one_valid_output_is_enough_and_the_other_is_reported():
    g = {**graph(), "4": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 1, "color": 0}},
         "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "y"}}}
    verdict = validate(g, INFO)
    assert verdict.error is None and verdict.outputs == ["3"]
    assert verdict.node_errors["4"]["dependent_outputs"] == ["5"]
    assert validate(g, INFO, targets=["5"]).error["type"] == "prompt_outputs_failed_validation"
    assert validate(g, INFO, targets=["2"]).error["type"] == "prompt_no_outputs"
    assert output_nodes(g, INFO) == ["3", "5"]


def test_a_cycle_does_not_hang_the_validator():
    g = {"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
         "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
         "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    assert validate(g, INFO).outputs == ["3"]


def test_merged_object_info_unions_combo_choices_and_classes():
    merged: dict = {}
    merge_object_info(merged, json.loads(json.dumps(INFO)))
    other = {"LoadImage": {"input": {"required": {"image": [["b.png", "z.png"], {}]}}}, "Extra": {"output": []}}
    merge_object_info(merged, other)
    assert merged["LoadImage"]["input"]["required"]["image"][0] == ["a.png", "b.png", "z.png"]
    assert "Extra" in merged and "EmptyImage" in merged


# ---------------------------------------------------------------------------------------------------- naming
def task(**fields) -> Task:
    base = {"id": "T1", "status": TaskStatus.COMPLETED, "created_ms": 1000, "updated_ms": 3000, "started_ms": 2000,
            "finished_ms": 3000, "comfy_prompt_id": "p-1", "number": 4.0, "prompt": graph(),
            "extra_data": {"client_id": "c"}}
    return Task(**{**base, **fields})


def output(filename: str, node: str = "3", subfolder: str = "sub") -> OutputFile:
    return OutputFile(node_id=node, filename=filename, subfolder=subfolder, size=1, content_type="image/png",
                      sha256="0" * 64, path=f"T1/{filename}")


def test_public_outputs_rename_files_into_the_task_and_keep_the_rest():
    t = task(outputs=[output("a_00001_.png"), output("3_b.png")])
    shown = public_outputs(t, {"3": {"images": [{"filename": "a_00001_.png", "subfolder": "sub", "type": "output"},
                                                {"filename": "b.png", "subfolder": "sub", "type": "output"}],
                                     "animated": [False]},
                               "9": {"text": ["hello"]}})
    assert shown["3"]["images"] == [
        {"filename": "a_00001_.png", "subfolder": "T1/sub", "type": "output"},
        {"filename": "3_b.png", "subfolder": "T1/sub", "type": "output"}]  # the name comfyart stored it under
    assert shown["3"]["animated"] == [False] and shown["9"] == {"text": ["hello"]}
    assert public_subfolder("T1", "") == "T1"
    assert public_outputs(task(outputs=[output("x.png", subfolder="")]), None) == {
        "3": {"images": [{"filename": "x.png", "subfolder": "T1", "type": "output"}]}}


def test_frames_are_rewritten_to_the_clients_prompt_id():
    relay = Relay("T1", "client-prompt", "c")
    executed = rewrite_frame(relay, "executed", {"node": "3", "prompt_id": "mine", "output": {
        "images": [{"filename": "f.png", "subfolder": "", "type": "output"}]}})
    assert executed["prompt_id"] == "client-prompt"
    assert executed["output"]["images"] == [{"filename": "f.png", "subfolder": "T1", "type": "output"}]
    state = rewrite_frame(relay, "progress_state", {"prompt_id": "mine", "nodes": {"3": {"prompt_id": "mine"}}})
    assert state["nodes"]["3"]["prompt_id"] == "client-prompt"


def test_a_legacy_preview_gains_metadata_for_clients_that_asked():
    legacy = struct.pack(">II", 1, 2) + b"\x89PNG..."
    framed = with_metadata(legacy, Relay("T1", "cp", "c"), "9")
    kind, length = struct.unpack(">II", framed[:8])
    assert kind == 4
    assert json.loads(framed[8:8 + length]) == {"node_id": "9", "prompt_id": "cp", "display_node_id": "9",
                                                "parent_node_id": None, "real_node_id": "9", "image_type": "image/png"}
    assert framed[8 + length:] == b"\x89PNG..."
    assert with_metadata(b"\x00\x00\x00\x03text", Relay("T1", "cp", "c"), "9") == b"\x00\x00\x00\x03text"


def test_terminal_messages_follow_how_the_task_ended():
    assert terminal_message(task()) == ("execution_success", {"prompt_id": "p-1", "timestamp": 3000})
    own = task(status=TaskStatus.FAILED, comfy_messages=[["execution_start", {"prompt_id": "backend-id"}], [
        "execution_error", {"prompt_id": "backend-id", "node_id": "2", "exception_message": "boom"}]])
    kind, data = terminal_message(own)
    assert kind == "execution_error" and data["prompt_id"] == "p-1" and data["node_id"] == "2"
    kind, data = terminal_message(task(status=TaskStatus.FAILED, error="backend lost"))
    assert kind == "execution_error" and data["exception_message"] == "backend lost"
    assert terminal_message(task(status=TaskStatus.CANCELED))[0] == "execution_interrupted"


def test_only_prompts_that_ran_reach_the_history():
    assert in_history(task())
    assert in_history(task(status=TaskStatus.FAILED))
    assert in_history(task(status=TaskStatus.CANCELED))  # interrupted while running
    assert not in_history(task(status=TaskStatus.CANCELED, started_ms=None))  # deleted from the queue
    assert not in_history(task(status=TaskStatus.RUNNING))


def test_history_queue_and_job_views():
    entry = history_entry(task(outputs=[output("a.png", subfolder="")], comfy_outputs={
        "3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}), ["3"])
    assert entry["prompt"] == [4, "p-1", graph(), {"client_id": "c"}, ["3"]]
    assert entry["status"] == {"status_str": "success", "completed": True, "messages": [
        ["execution_start", {"prompt_id": "p-1", "timestamp": 2000}],
        ["execution_cached", {"nodes": [], "prompt_id": "p-1", "timestamp": 2000}],
        ["execution_success", {"prompt_id": "p-1", "timestamp": 3000}]]}
    assert entry["meta"] == {"3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}}
    assert queue_item(task(number=2.5), [])[0] == 2.5
    done = job(task(outputs=[output("a.png")]), detail=True)
    assert done["status"] == "completed" and done["outputs_count"] == 1 and done["previewable_outputs_count"] == 1
    assert done["execution_status"]["completed"] is True
    assert job(task(status=TaskStatus.RUNNING))["status"] == "in_progress"
    assert job(task(status=TaskStatus.CANCELED))["execution_error"]["prompt_id"] == "p-1"


# ---------------------------------------------------------------------------------------------------- webhooks
@pytest.mark.parametrize("attempt, status, expected", [
    (1, 200, None), (1, 204, None), (3, 299, None),
    (1, 500, 1.0), (2, 503, 2.0), (3, None, 4.0), (4, 404, 8.0), (1, 300, 1.0),
    (8, 500, None),  # the last attempt
    (7, 500, 30.0),  # capped
])
def test_webhook_retries_double_up_to_the_cap_until_2xx_or_the_last_attempt(attempt, status, expected):
    assert webhook_next_attempt(attempt=attempt, status=status, max_attempts=8, backoff_s=1.0,
                                backoff_max_s=30.0) == expected


def test_webhook_payload_and_signature():
    body = payload(task(outputs=[output("a b.png")]),
                   lambda t, name: f"http://example.test:8100/api/tasks/{t.id}/outputs/{quote(name)}")
    record = json.loads(body)
    assert "prompt" not in record and record["id"] == "T1"
    assert record["outputs"][0]["url"] == "http://example.test:8100/api/tasks/T1/outputs/a%20b.png"
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------------- events
async def test_subscribers_get_what_they_filter_and_a_slow_one_is_cut_off():
    hub = EventHub()
    assert not hub.listening
    with hub.subscribe(lambda e: e["id"] == "a") as only_a, hub.subscribe(capacity=2) as small:
        for i in range(3):
            hub.publish({"type": "task", "id": "a" if i != 1 else "b", "n": i})
        assert [await only_a.get(0), await only_a.get(0)] == [{"type": "task", "id": "a", "n": 0},
                                                              {"type": "task", "id": "a", "n": 2}]
        assert await only_a.get(0.01) is None
        assert (await small.get(0))["type"] == "lagged" and small.closed
        assert await small.get(0) is None
        hub.publish({"type": "task", "id": "a", "n": 9})
        assert [e async for e in _take(only_a, 1)] == [{"type": "task", "id": "a", "n": 9}]
    assert not hub.listening


async def _take(subscription, count):
    for _ in range(count):
        yield await asyncio.wait_for(subscription.__anext__(), 1)


async def test_cached_answers_are_reused_and_bounded():
    from comfyart.api.comfyui.catalog import CACHED_ANSWERS, Catalog
    front = Catalog(pool=None)
    fetched = []

    def fetcher(key):
        async def fetch():
            fetched.append(key)
            return key
        return fetch

    assert await front._cached("a", 60, fetcher("a")) == "a"
    assert await front._cached("a", 60, fetcher("a")) == "a"
    assert fetched == ["a"]
    for i in range(CACHED_ANSWERS * 3):
        await front._cached(f"/models/{i}", 60, fetcher(i))
    assert len(front._cache) <= CACHED_ANSWERS
    assert await front._cached("expired", 0, fetcher("x")) == "x"
    assert await front._cached("expired", 0, fetcher("y")) == "y"  # a TTL of 0: fetched again
