"""A task as ComfyUI shows it (api.comfyui.shapes): outputs under the task's folder, rewritten frames, preview
metadata, terminal messages, history, queue and job views."""
from __future__ import annotations

import json
import struct

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
from comfyart.models import Relay, TaskStatus
from tests.support.graphs import invert_graph
from tests.support.tasks import make_output, make_task


def test_public_outputs_rename_files_into_the_task_and_keep_the_rest():
    t = make_task(outputs=[make_output("a_00001_.png"), make_output("3_b.png")])
    shown = public_outputs(t, {"3": {"images": [{"filename": "a_00001_.png", "subfolder": "sub", "type": "output"},
                                                {"filename": "b.png", "subfolder": "sub", "type": "output"}],
                                     "animated": [False]},
                               "9": {"text": ["hello"]}})
    assert shown["3"]["images"] == [
        {"filename": "a_00001_.png", "subfolder": "T1/sub", "type": "output"},
        {"filename": "3_b.png", "subfolder": "T1/sub", "type": "output"}]  # the name comfyart stored it under
    assert shown["3"]["animated"] == [False] and shown["9"] == {"text": ["hello"]}
    assert public_subfolder("T1", "") == "T1"
    assert public_outputs(make_task(outputs=[make_output("x.png", subfolder="")]), None) == {
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
    assert terminal_message(make_task()) == ("execution_success", {"prompt_id": "p-1", "timestamp": 3000})
    own = make_task(status=TaskStatus.FAILED, comfy_messages=[["execution_start", {"prompt_id": "backend-id"}], [
        "execution_error", {"prompt_id": "backend-id", "node_id": "2", "exception_message": "boom"}]])
    kind, data = terminal_message(own)
    assert kind == "execution_error" and data["prompt_id"] == "p-1" and data["node_id"] == "2"
    kind, data = terminal_message(make_task(status=TaskStatus.FAILED, error="backend lost"))
    assert kind == "execution_error" and data["exception_message"] == "backend lost"
    assert terminal_message(make_task(status=TaskStatus.CANCELED))[0] == "execution_interrupted"


def test_only_prompts_that_ran_reach_the_history():
    assert in_history(make_task())
    assert in_history(make_task(status=TaskStatus.FAILED))
    assert in_history(make_task(status=TaskStatus.CANCELED))  # interrupted while running
    assert not in_history(make_task(status=TaskStatus.CANCELED, started_ms=None))  # deleted from the queue
    assert not in_history(make_task(status=TaskStatus.RUNNING))


def test_history_queue_and_job_views():
    entry = history_entry(make_task(outputs=[make_output("a.png", subfolder="")], comfy_outputs={
        "3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}), ["3"])
    assert entry["prompt"] == [4, "p-1", invert_graph(), {"client_id": "c"}, ["3"]]
    assert entry["status"] == {"status_str": "success", "completed": True, "messages": [
        ["execution_start", {"prompt_id": "p-1", "timestamp": 2000}],
        ["execution_cached", {"nodes": [], "prompt_id": "p-1", "timestamp": 2000}],
        ["execution_success", {"prompt_id": "p-1", "timestamp": 3000}]]}
    assert entry["meta"] == {"3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}}
    assert queue_item(make_task(number=2.5), [])[0] == 2.5
    done = job(make_task(outputs=[make_output("a.png")]), detail=True)
    assert done["status"] == "completed" and done["outputs_count"] == 1 and done["previewable_outputs_count"] == 1
    assert done["execution_status"]["completed"] is True
    assert job(make_task(status=TaskStatus.RUNNING))["status"] == "in_progress"
    assert job(make_task(status=TaskStatus.FAILED, error="boom"))["execution_error"]["prompt_id"] == "p-1"
    cancelled = job(make_task(status=TaskStatus.CANCELED))  # ComfyUI: no execution_error for an interrupted one
    assert cancelled["status"] == "cancelled" and "execution_error" not in cancelled


def test_job_assets_list_each_output_file_with_its_link_size_and_type():
    from comfyart.api.comfyui.shapes import job_assets
    t = make_task(outputs=[make_output("a.png"), make_output("b.png")],
                  comfy_outputs={"3": {"images": [{"filename": "a.png", "subfolder": "sub", "type": "output"},
                                                  {"filename": "b.png", "subfolder": "sub", "type": "output"}],
                                       "text": ["not a file"]},
                                 "7": {"gifs": [{"filename": "c.webm", "subfolder": "", "type": "temp"}]}})
    page = job_assets(t, 0, None)
    assert page["job_id"] == "p-1"
    assert page["pagination"] == {"offset": 0, "limit": None, "total": 3, "has_more": False}
    first, second, third = page["assets"]
    assert first == {"id": "T1-3-0", "name": "a.png", "preview_url": "/api/view?filename=a.png&subfolder=T1%2Fsub"
                     "&type=output", "mime_type": "image/png", "size": 1, "node_id": "3", "output_key": "images",
                     "output_index": 0, "created_at": "1970-01-01T00:00:03.000Z"}
    assert (second["name"], second["output_index"]) == ("b.png", 1)
    # a file comfyart has not stored (yet): its type from its name, no size
    assert (third["node_id"], third["output_index"], third["size"], third["mime_type"]) == ("7", 0, None,
                                                                                            "video/webm")
    assert third["preview_url"] == "/api/view?filename=c.webm&subfolder=T1&type=temp"
    later = job_assets(t, 1, 1)
    assert [a["name"] for a in later["assets"]] == ["b.png"]
    assert later["pagination"] == {"offset": 1, "limit": 1, "total": 3, "has_more": True}
    assert job_assets(t, 5, 10)["assets"] == []
    assert job_assets(make_task(), 0, None)["assets"] == []


def test_a_job_is_shaped_as_newer_comfyui_shapes_it():
    """comfy_execution/jobs.py: the queue number as ComfyUI counts it (an integer), no field that would be null
    (prune_dict), and a finished job's execution_status is its history entry's status, messages included."""
    done = job(make_task(number=4.0, outputs=[make_output("a.png")]), detail=True)
    assert done["priority"] == 4 and isinstance(done["priority"], int)
    assert "execution_error" not in done and None not in done.values()
    assert done["execution_status"]["messages"][-1][0] == "execution_success"
    assert job(make_task(number=2.5))["priority"] == 2.5
    waiting = job(make_task(status=TaskStatus.PENDING, started_ms=None, finished_ms=None), detail=True)
    assert "execution_start_time" not in waiting and "preview_output" not in waiting
    assert waiting["execution_status"] == {"status_str": "error", "completed": False}
