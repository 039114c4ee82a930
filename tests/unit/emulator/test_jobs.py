"""The newest server's jobs API as pure functions (emulator.jobs): queue items and history entries as jobs, the
list's filters, order and pages, and its query's checks."""
from __future__ import annotations

import pytest

from comfyart.emulator import jobs


def _history(status_str: str, end_event: str, created: int, outputs: dict | None = None) -> dict:
    return {"prompt": [1, "p", {}, {"create_time": created, "extra_pnginfo": {"workflow": {"id": "wf"}}}, ["9"]],
            "outputs": outputs or {},
            "status": {"status_str": status_str, "completed": status_str == "success",
                       "messages": [["execution_start", {"prompt_id": "p", "timestamp": created + 10}],
                                    [end_event, {"prompt_id": "p", "timestamp": created + 40}]]}}


def test_a_history_entry_becomes_a_job_by_how_it_ended():
    image = {"filename": "a.png", "subfolder": "", "type": "output"}
    done = jobs.history_job("p", _history("success", "execution_success", 100,
                                          {"9": {"images": [image, {**image, "type": "temp"}]}}))
    assert done == {"id": "p", "status": "completed", "priority": 1, "create_time": 100,
                    "execution_start_time": 110, "execution_end_time": 140, "outputs_count": 2,
                    "previewable_outputs_count": 2, "workflow_id": "wf",
                    "preview_output": {**image, "nodeId": "9", "mediaType": "images"}}
    failed = jobs.history_job("p", _history("error", "execution_error", 100))
    assert failed["status"] == "failed" and failed["execution_error"] == {"prompt_id": "p", "timestamp": 140}
    assert jobs.history_job("p", _history("error", "execution_interrupted", 100))["status"] == "cancelled"
    detail = jobs.history_job("p", _history("success", "execution_success", 100), detail=True)
    assert set(detail) >= {"outputs", "execution_status", "workflow"} and "preview_output" not in detail


def test_a_queue_item_becomes_a_job_without_empty_fields():
    item = [3, "q", {"1": {}}, {"client_id": "c"}, ["1"]]
    assert jobs.queue_job(item, jobs.PENDING) == {"id": "q", "status": "pending", "priority": 3,
                                                   "outputs_count": 0, "previewable_outputs_count": 0}
    assert jobs.queue_job(item, jobs.IN_PROGRESS, detail=True)["workflow"] == {"prompt": {"1": {}},
                                                                               "extra_data": {"client_id": "c"}}


def test_the_list_filters_orders_and_pages():
    history = {f"h{i}": _history("success" if i % 2 else "error", "execution_success" if i % 2 else
                                 "execution_error", 100 * i) for i in range(1, 6)}
    running = [[0, "r", {}, {"create_time": 900}, []]]
    pending = [[1, "w", {}, {"create_time": 1000}, []]]
    every = jobs.list_jobs(running, pending, history, jobs.parse_query({}))
    assert [j["id"] for j in every["jobs"]] == ["w", "r", "h5", "h4", "h3", "h2", "h1"]
    page = jobs.list_jobs(running, pending, history, jobs.parse_query({"status": "completed,failed", "limit": "2",
                                                                       "offset": "1", "sort_order": "asc"}))
    assert [j["id"] for j in page["jobs"]] == ["h2", "h3"]
    assert page["pagination"] == {"offset": 1, "limit": 2, "total": 5, "has_more": True}
    assert jobs.find_job("w", running, pending, history)["status"] == "pending"
    assert jobs.find_job("h2", running, pending, history)["status"] == "failed"
    assert jobs.find_job("nope", running, pending, history) is None


@pytest.mark.parametrize("query, message", [
    ({"status": "done"}, "Invalid status value(s): done"), ({"sort_by": "name"}, "sort_by must be"),
    ({"sort_order": "up"}, "sort_order must be"), ({"limit": "0"}, "limit must be a positive integer"),
    ({"limit": "x"}, "limit must be an integer"), ({"offset": "x"}, "offset must be an integer")])
def test_a_bad_query_is_refused_as_the_server_words_it(query, message):
    with pytest.raises(jobs.JobQueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs.parse_query(query)
