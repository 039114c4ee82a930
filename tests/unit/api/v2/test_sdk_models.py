"""The v2 shapes read by comfy-sdk's own generated models (comfy_low.models, generated from the canonical OpenAPI
2.0.0): a Job in each state, its Output, Progress and JobError, a workflow and a list item, through the JSON a client
gets. Missing required keys, naive timestamps, relative output URLs or a status outside the enum all fail here."""
from __future__ import annotations

import json

import pytest
from comfy_low.models import Job, JobError, JobStatus, JobWorkflowResponse, Output, OutputType, Progress
from comfy_low.transport import _job as sdk_job
from comfy_sdk.jobs import JobSummary

from comfyart.api.v2.shapes import job, list_item, workflow_response
from comfyart.models import Task, TaskStatus
from tests.support.graphs import text_to_image_graph
from tests.support.tasks import make_output, make_task

BASE = "http://comfyart.test:8000"
RETENTION_S = 3600
NOW_MS = 10_000


def wire(body: dict) -> str:
    return json.dumps(body)


def pending() -> Task:
    return make_task(status=TaskStatus.PENDING, started_ms=None, finished_ms=None)


def running() -> Task:
    return make_task(status=TaskStatus.RUNNING, finished_ms=None, prompt=text_to_image_graph(), progress=0.42,
                     node="3", node_step=21, node_max=50)


def succeeded() -> Task:
    files = [make_output("ComfyUI_00001_.png", node="9"), make_output("clip.mp4", node="12"),
             make_output("a.latent", node="13"), make_output("notes.txt", node="14")]
    for stored, content_type in zip(files[1:], ("video/mp4", "application/octet-stream", "text/plain"), strict=True):
        stored.content_type = content_type
    return make_task(outputs=files, prompt=text_to_image_graph(), progress=1.0)


def failed() -> Task:
    return make_task(status=TaskStatus.FAILED, prompt=text_to_image_graph(), progress=0.3, node="3",
                     error="RuntimeError in node 3 (KSampler): CUDA out of memory",
                     comfy_messages=[["execution_error", {"node_id": "3", "node_type": "KSampler",
                                                          "traceback": ["Traceback…\n"]}]])


def canceled() -> Task:
    return make_task(status=TaskStatus.CANCELED, error="canceled")


CASES = [  # task, v2 status, canceling asked
    (pending, "queued", False), (running, "running", False), (running, "canceling", True),
    (succeeded, "succeeded", False), (failed, "failed", False), (canceled, "canceled", False),
]


def shown(task: Task, *, canceling: bool = False, now_ms: int = NOW_MS) -> dict:
    return job(task, base_url=BASE, now_ms=now_ms, retention_s=RETENTION_S, queue_position=1, canceling=canceling,
               metadata={"client": "acme"})


@pytest.mark.parametrize(("make", "status", "canceling"), CASES)
def test_the_sdk_reads_a_job_in_each_state(make, status, canceling):
    body = shown(make(), canceling=canceling)
    model = Job.model_validate_json(wire(body))
    assert model.status is JobStatus(status)
    assert model.created_at.utcoffset() is not None and model.expires_at.utcoffset() is not None
    assert model.urls.self == f"{BASE}/api/v2/jobs/T1"
    lenient = sdk_job(json.loads(wire(body)))  # how the SDK's transport reads a job: labels kept
    assert lenient.metadata == {"client": "acme"}  # type: ignore[attr-defined]


def test_the_sdk_reads_an_expired_job():
    model = Job.model_validate_json(wire(shown(succeeded(), now_ms=3000 + RETENTION_S * 1000)))
    assert model.status is JobStatus.expired and model.outputs == []


def test_the_sdk_reads_each_output_as_an_asset():
    body = shown(succeeded())
    model = Job.model_validate_json(wire(body))
    assert [o.type for o in model.outputs] == [OutputType.image, OutputType.video, OutputType.latent,
                                               OutputType.text]
    for raw, read in zip(body["outputs"], model.outputs, strict=True):
        Output.model_validate_json(wire(raw))
        assert str(read.url) == f"{BASE}/api/v2/assets/{read.id}/content"
        assert read.url_expires_at.utcoffset() is not None and read.hash is None and read.job_id == "T1"


def test_the_sdk_reads_live_progress():
    model = Job.model_validate_json(wire(shown(running())))
    assert model.progress is not None
    Progress.model_validate_json(wire(shown(running())["progress"]))
    assert (model.progress.current_node_class, model.progress.step, model.progress.steps) == ("KSampler", 21, 50)
    assert 0 < model.progress.nodes_done < model.progress.nodes_total


def test_the_sdk_reads_a_failure():
    body = shown(failed())
    JobError.model_validate_json(wire(body["error"]))
    error = Job.model_validate_json(wire(body)).error
    assert error is not None
    assert (error.code, error.node_id, error.class_type) == ("node_execution_error", "3", "KSampler")


def test_the_sdk_reads_a_workflow_and_a_list_item():
    JobWorkflowResponse.model_validate_json(wire(workflow_response(succeeded())))
    item = list_item(running(), now_ms=NOW_MS, retention_s=RETENTION_S, canceling=True, metadata={"k": "v"})
    summary = JobSummary._from_item(json.loads(wire(item)))
    assert (summary.status, summary.metadata) == ("canceling", {"k": "v"})
    assert summary.create_time is not None and summary.update_time is not None
    assert summary.create_time.utcoffset() is not None
