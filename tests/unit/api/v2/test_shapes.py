"""A task as Comfy API v2 shows it (api.v2.shapes): statuses, the Job's keys, progress, outputs as assets, errors,
metrics, links, list items and cursors."""
from __future__ import annotations

import datetime

import pytest

from comfyart.api.v2.shapes import (
    STATUSES,
    TERMINAL,
    after_cursor,
    decode_cursor,
    encode_cursor,
    iso,
    job,
    job_error,
    list_item,
    metrics,
    nodes_done,
    output_asset_id,
    output_type,
    parse_output_asset_id,
    progress,
    v2_status,
    workflow_response,
)
from comfyart.comfy.protocol import describe_error
from comfyart.models import FINAL_STATUSES, TaskStatus
from comfyart.policy.attempts import prompt_progress
from tests.support.graphs import invert_graph, text_to_image_graph
from tests.support.tasks import make_output, make_task

BASE = "https://art.example/prefix/"
DAY_S = 24 * 3600
JOB_KEYS = {"id", "status", "created_at", "started_at", "completed_at", "expires_at", "queue_position", "progress",
            "outputs", "error", "metrics", "urls", "metadata", "priority"}


# ---------------------------------------------------------------------------------------------------- status
@pytest.mark.parametrize(("status", "canceling", "expected"), [
    (TaskStatus.PENDING, False, "queued"), (TaskStatus.PENDING, True, "queued"),
    (TaskStatus.RUNNING, False, "running"), (TaskStatus.RUNNING, True, "canceling"),
    (TaskStatus.COMPLETED, False, "succeeded"), (TaskStatus.COMPLETED, True, "succeeded"),
    (TaskStatus.FAILED, False, "failed"), (TaskStatus.FAILED, True, "failed"),
    (TaskStatus.CANCELED, False, "canceled"), (TaskStatus.CANCELED, True, "canceled"),
])
def test_every_task_status_maps_onto_v2(status, canceling, expected):
    task = make_task(status=status, created_ms=1000)
    assert v2_status(task, now_ms=1000 + DAY_S * 1000 - 1, retention_s=DAY_S, canceling=canceling) == expected


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("canceling", [False, True])
def test_a_finished_job_past_its_end_plus_retention_is_expired(status, canceling):
    task = make_task(status=status, created_ms=1000, finished_ms=3000)
    assert v2_status(task, now_ms=3000 + 60_000, retention_s=60, canceling=canceling) == "expired"
    assert v2_status(task, now_ms=3000 + 59_999, retention_s=60, canceling=canceling) != "expired"


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING])
def test_a_job_that_has_not_ended_is_never_expired(status):
    task = make_task(status=status, created_ms=1000, finished_ms=None)
    assert v2_status(task, now_ms=10**13, retention_s=60) in ("queued", "running")
    assert job(task, base_url=BASE, now_ms=50_000, retention_s=60)["expires_at"] == iso(110_000)


def test_a_job_the_sweep_marked_stays_expired_and_a_cancel_asked_shows_canceling():
    assert v2_status(make_task(expired_ms=5000), now_ms=4000, retention_s=DAY_S) == "expired"
    running = make_task(status=TaskStatus.RUNNING, finished_ms=None, cancel_asked_ms=2500)
    assert v2_status(running, now_ms=3000, retention_s=DAY_S) == "canceling"
    assert job(running, base_url=BASE, now_ms=3000, retention_s=DAY_S)["status"] == "canceling"


def test_a_job_shows_its_labels():
    task = make_task(labels={"run": "a"})
    assert job(task, base_url=BASE, now_ms=3000, retention_s=DAY_S)["metadata"] == {"run": "a"}
    assert list_item(task, now_ms=3000, retention_s=DAY_S)["metadata"] == {"run": "a"}


def test_the_statuses_are_the_contracts_and_canceling_is_not_terminal():
    assert STATUSES == ("queued", "running", "succeeded", "canceling", "canceled", "failed", "expired")
    assert {"succeeded", "canceled", "failed", "expired"} == TERMINAL


def test_timestamps_are_timezone_aware_iso():
    text = iso(1_700_000_000_123)
    assert text == "2023-11-14T22:13:20.123+00:00"
    assert datetime.datetime.fromisoformat(text).tzinfo is not None


# ---------------------------------------------------------------------------------------------------- job
def test_a_job_has_every_key_and_links_absolute_from_the_public_url():
    body = job(make_task(status=TaskStatus.PENDING, started_ms=None, finished_ms=None), base_url=BASE,
               now_ms=1500, retention_s=DAY_S, queue_position=3, metadata={"client": "acme"})
    assert set(body) == JOB_KEYS
    assert body["urls"] == {"self": "https://art.example/prefix/api/v2/jobs/T1",
                            "events": "https://art.example/prefix/api/v2/jobs/T1/events",
                            "cancel": "https://art.example/prefix/api/v2/jobs/T1/cancel"}
    assert (body["status"], body["queue_position"], body["progress"]) == ("queued", 3, None)
    assert (body["started_at"], body["completed_at"], body["error"]) == (None, None, None)
    assert body["created_at"] == iso(1000) and body["expires_at"] == iso(1500 + DAY_S * 1000)
    assert body["metadata"] == {"client": "acme"} and body["outputs"] == []
    assert body["metrics"] == {"queue_ms": None, "execution_ms": None}


def test_a_queue_position_shows_only_while_queued_and_a_running_job_has_no_end():
    body = job(make_task(status=TaskStatus.RUNNING, finished_ms=None), base_url=BASE, now_ms=2500,
               retention_s=DAY_S, queue_position=2)
    assert body["queue_position"] is None and body["completed_at"] is None
    assert body["started_at"] == iso(2000) and body["metadata"] == {}


def test_an_id_is_quoted_in_the_links():
    assert job(make_task(id="a/b c"), base_url="http://h:1", now_ms=0, retention_s=60)["urls"]["self"] == \
        "http://h:1/api/v2/jobs/a%2Fb%20c"


def test_a_finished_job_shows_its_times_metrics_and_outputs_as_assets():
    task = make_task(outputs=[make_output("a.png"), make_output("b.mp4", node="7")])
    task.outputs[1].content_type = "video/mp4"
    body = job(task, base_url=BASE, now_ms=3500, retention_s=DAY_S)
    assert (body["status"], body["completed_at"]) == ("succeeded", iso(3000))
    assert body["metrics"] == {"queue_ms": 1000, "execution_ms": 1000}
    first, second = body["outputs"]
    assert first == {"node_id": "3", "name": "a.png", "type": "image", "content_type": "image/png", "size_bytes": 1,
                     "id": output_asset_id("T1", "a.png"), "hash": None,
                     "url": f"https://art.example/prefix/api/v2/assets/{output_asset_id('T1', 'a.png')}/content",
                     "url_expires_at": iso(3000 + DAY_S * 1000), "job_id": "T1"}
    assert (second["node_id"], second["type"]) == ("7", "video")
    assert body["progress"]["value"] == 1.0 and body["progress"]["nodes_done"] == 3


def test_an_expired_job_shows_no_outputs_and_no_progress():
    body = job(make_task(outputs=[make_output("a.png")]), base_url=BASE, now_ms=3000 + 60_000, retention_s=60)
    assert (body["status"], body["outputs"], body["progress"]) == ("expired", [], None)
    assert body["completed_at"] == iso(3000)


# ---------------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize(("task_id", "filename"), [
    ("01J0ABCDEFGHJKMNPQRSTVWXYZ", "ComfyUI_00001_.png"), ("T1", "3_a b.png"), ("x", "ünï cødé ✓.webp"),
    ("with.dots/and slash", "name.with.many.dots"), ("T", "?#&%=+"),
])
def test_an_output_asset_id_is_url_safe_and_parses_back(task_id, filename):
    asset_id = output_asset_id(task_id, filename)
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in asset_id)
    assert output_asset_id(task_id, filename) == asset_id
    assert parse_output_asset_id(asset_id) == (task_id, filename)


@pytest.mark.parametrize("text", ["", "o1.", "o1.VDE", "o1.VDE.", "o1..YS5wbmc", "o1.VDE.YS5wbmc.x", "o2.VDE.YS5wbmc",
                                  "9f8a1c0d-2b3e-4f56-8a7b-1c2d3e4f5a6b", "o1.V+E.YS5wbmc", "o1.VDE.gA"])
def test_other_text_is_not_an_output_asset_id(text):
    assert parse_output_asset_id(text) is None


@pytest.mark.parametrize(("content_type", "filename", "expected"), [
    ("image/png", "a.png", "image"), ("image/gif", "a.gif", "image"), ("video/mp4", "a.mp4", "video"),
    ("audio/flac", "a.flac", "audio"), ("text/plain; charset=utf-8", "a.txt", "text"),
    ("application/json", "a.json", "text"), ("application/octet-stream", "a.latent", "latent"),
    ("application/octet-stream", "a.bin", "file"), ("model/gltf-binary", "a.glb", "file"), ("", "a", "file"),
])
def test_an_output_type_follows_its_content_type(content_type, filename, expected):
    assert output_type(content_type, filename) == expected


# ---------------------------------------------------------------------------------------------------- progress
def test_progress_of_a_running_job_is_a_complete_snapshot():
    task = make_task(status=TaskStatus.RUNNING, prompt=text_to_image_graph(), progress=0.5, node="3", node_step=21,
                     node_max=50)
    assert progress(task, "running") == {"value": 0.5, "nodes_done": 3, "nodes_total": 7, "current_node": "3",
                                         "current_node_class": "KSampler", "step": 21, "steps": 50,
                                         "message": "KSampler 21/50"}


def test_nodes_done_are_the_nodes_the_rounded_fraction_stands_for():
    # seen against a real ComfyUI: 3 of 23 nodes done showed nodes_done 2 (0.1304 * 23 = 2.9992)
    for total in range(1, 400):
        for done in range(total + 1):
            for step in ((None, None), (1, 2)) if done < total else ((None, None),):
                value = prompt_progress(total_nodes=total, cached_nodes=0, finished_nodes=done, step=step[0],
                                        step_max=step[1])
                assert nodes_done(value, total) == done, (total, done, step, value)


def test_the_running_node_never_counts_as_done():
    task = make_task(status=TaskStatus.RUNNING, prompt=invert_graph(), progress=1.0, node="3")
    snapshot = progress(task, "canceling")
    assert (snapshot["nodes_done"], snapshot["nodes_total"], snapshot["message"]) == (2, 3, None)


def test_progress_without_a_graph_or_out_of_range_stays_valid():
    task = make_task(status=TaskStatus.RUNNING, prompt=None, progress=1.7)
    assert progress(task, "running") == {"value": 1.0, "nodes_done": 0, "nodes_total": 0, "current_node": None,
                                         "current_node_class": None, "step": None, "steps": None, "message": None}
    assert progress(make_task(status=TaskStatus.PENDING), "queued") is None


# ---------------------------------------------------------------------------------------------------- errors
def test_a_node_error_the_backend_reported_carries_its_node_class_and_traceback():
    task = make_task(status=TaskStatus.FAILED, error="boom in node 2 (ImageInvert): bad",
                     comfy_messages=[["execution_start", {}], ["execution_error", {
                         "node_id": "2", "node_type": "ImageInvert", "traceback": ["line 1\n", "line 2\n"]}]])
    assert job_error(task) == {"code": "node_execution_error", "message": "boom in node 2 (ImageInvert): bad",
                               "node_id": "2", "class_type": "ImageInvert", "traceback": "line 1\nline 2\n"}


def test_a_node_error_from_comfyarts_own_text_names_its_node():
    error = describe_error("2", None, "RuntimeError", "out of memory")
    assert job_error(make_task(status=TaskStatus.FAILED, error=error)) == {
        "code": "node_execution_error", "message": error, "node_id": "2", "class_type": "ImageInvert",
        "traceback": None}


@pytest.mark.parametrize("error", [None, "gave up after 3 attempts; the last: backend b1 lost",
                                   describe_error(None, None, "ValueError", "no outputs")])
def test_a_failure_that_is_not_a_nodes_is_comfyarts(error):
    body = job_error(make_task(status=TaskStatus.FAILED, error=error))
    assert body is not None and body["code"] == "comfyart_failed" and body["node_id"] is None
    assert body["message"] == (error or "the job failed")


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not TaskStatus.FAILED])
def test_only_a_failed_job_has_an_error(status):
    assert job_error(make_task(status=status, error="interrupted at node 2 (ImageInvert)")) is None


def test_metrics_of_a_job_canceled_in_the_queue():
    assert metrics(make_task(status=TaskStatus.CANCELED, started_ms=None)) == {"queue_ms": None,
                                                                                "execution_ms": None}


# ---------------------------------------------------------------------------------------------------- list
def test_the_workflow_is_the_api_graph():
    assert workflow_response(make_task()) == {"workflow": invert_graph(), "format": "api"}
    assert workflow_response(make_task(prompt=None)) == {"workflow": {}, "format": "api"}


def test_a_list_item_has_what_the_sdk_reads():
    item = list_item(make_task(status=TaskStatus.RUNNING), now_ms=2000, retention_s=60, canceling=True,
                     metadata={"k": "v"})
    assert item == {"id": "T1", "status": "canceling", "create_time": iso(1000), "update_time": iso(3000),
                    "metadata": {"k": "v"}}


@pytest.mark.parametrize(("created_ms", "task_id"), [(0, "T"), (1_700_000_000_000, "01J0ABCDEFGHJKMNPQRSTVWXYZ"),
                                                     (5, "ünï/?")])
def test_a_cursor_round_trips_and_is_url_safe(created_ms, task_id):
    cursor = encode_cursor(created_ms, task_id)
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in cursor)
    assert decode_cursor(cursor) == (created_ms, task_id)


@pytest.mark.parametrize("text", ["", "!!", "a", "bm90IGpzb24", encode_cursor(1, "x")[:-2] + "~~",
                                  "WzEsMiwzXQ", "WyIxIiwieCJd", "W3RydWUsIngiXQ", "Wy0xLCJ4Il0", "WzEsIiJd",
                                  "eyJhIjoxfQ", "WzEuNSwieCJd"])
def test_anything_else_is_not_a_cursor(text):
    with pytest.raises(ValueError):
        decode_cursor(text)


def test_pages_run_newest_first_and_ties_by_id():
    jobs = [(3, "a"), (2, "c"), (2, "b"), (1, "z")]
    assert sorted(jobs, reverse=True) == jobs
    for index, (created_ms, task_id) in enumerate(jobs):
        cursor = decode_cursor(encode_cursor(created_ms, task_id))
        assert [j for j in jobs if after_cursor(*j, cursor)] == jobs[index + 1:]
