"""The real ``comfy-sdk``, unmodified, against one ``comfyart serve`` for the module (auth on, two emulators that
send previews, pointed at by ``COMFY_BASE_URL``): ``run()`` and the SDK's own output downloads, inputs uploaded
both ways (by hash, multipart) and loaded on either backend, a plain ``file_path`` in LoadImage, the typed event
stream to its end, a running job's cancel, and ``list_jobs`` by labels and pages. Each test reads only its own
jobs (its seeds, its labels), so they share the server."""
from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from comfy_sdk import Comfy, JobFailed
from comfy_sdk.events import OutputReady, Preview, Progress, StatusChange
from PIL import Image

from tests.support.emulator import EmulatorProcess
from tests.support.graphs import basic_graph, image_to_image_graph, text_to_image_graph
from tests.support.v2 import V2Server, emulators, v2_server, wait_for_job

PREVIEWS = ("--preview-method", "auto")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[V2Server]:
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    workdir = tmp_path_factory.mktemp("sdk-flows")
    with emulators(workdir, 2, *PREVIEWS) as started, v2_server(workdir, redis_server, started) as running:
        yield running


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def prompt_of(server: V2Server, node: str, name: str, value: Any) -> tuple[EmulatorProcess, dict[str, Any]]:
    """The one emulator whose history holds a prompt with ``node``'s input ``name`` = ``value``, and its entry."""
    found = [(emu, entry) for emu in server.emulators
             for entry in httpx.get(f"{emu.url}/history", timeout=10).json().values()
             if entry["prompt"][2].get(node, {}).get("inputs", {}).get(name) == value]
    assert len(found) == 1, f"{len(found)} prompts with {node}.{name} = {value!r}"
    return found[0]


def viewed(emu: EmulatorProcess, filename: str, kind: str, subfolder: str = "") -> bytes:
    """A file of the backend's own, as its ``/view`` serves it."""
    answer = httpx.get(f"{emu.url}/view", params={"filename": filename, "type": kind, "subfolder": subfolder},
                       timeout=10)
    assert answer.status_code == 200, f"{filename} [{kind}] not on {emu.url}"
    return answer.content


def only_backend(server: V2Server, index: int | None) -> None:
    """Every backend but ``index`` disabled (None: all enabled again): which one runs the next job."""
    with server.http("ops") as admin:
        for i in range(len(server.emulators)):
            action = "enable" if index is None or i == index else "disable"
            assert admin.post(f"/api/pool/backends/static:emu{i}/{action}").status_code == 200


@contextmanager
def stepping(server: V2Server, step_s: float) -> Iterator[None]:
    """Each sampler step takes ``step_s`` on every backend for the block; as before after."""
    before = [emu.control()["step_s"] for emu in server.emulators]
    try:
        for emu in server.emulators:
            emu.control(step_s=step_s)
        yield
    finally:
        for emu, old in zip(server.emulators, before, strict=True):
            emu.control(step_s=old)


def test_run_and_save_the_outputs_with_the_sdks_own_downloads(server: V2Server, tmp_path: Path):
    with server.sdk("alice") as client:
        job = client.run(client.workflows.from_json(text_to_image_graph(seed=101)), timeout=60)
        assert job.status == "succeeded"
        [output] = job.outputs
        emu, entry = prompt_of(server, "3", "seed", 101)
        [image] = entry["outputs"]["9"]["images"]
        produced = viewed(emu, image["filename"], image["type"], image["subfolder"])
        assert output.node_id == "9" and output.type == "image" and output.content_type == "image/png"
        assert output.name == image["filename"] and output.size_bytes == len(produced) and output.job_id == job.id
        saved = output.to_file(tmp_path / output.name)
        assert saved.read_bytes() == produced and output.to_bytes() == produced
        sink = io.BytesIO()
        assert output.to_stream(sink) == len(produced) and sink.getvalue() == produced
        assert output.to_bytes(range=(1, 3)) == produced[1:4] == b"PNG"
        link = output.get_download_url()
        assert link.expires_at is None and link.url == f"{server.base_url}/api/v2/assets/{output.id}/content"
        stored = next((server.workdir / "data").rglob(output.name))  # the copy comfyart keeps
        assert stored.read_bytes() == produced
    with server.http("alice") as alice, server.http("bob") as bob:
        assert alice.get(link.url).content == produced
        assert bob.get(link.url).status_code == 404  # another key's output is a missing one


def test_inputs_uploaded_by_hash_and_by_multipart_run_on_both_backends(server: V2Server, tmp_path: Path):
    known, fresh = png((200, 40, 40)), png((20, 160, 60))
    with server.sdk("alice") as client, server.http("alice") as http:
        first = client.assets.from_bytes(known, filename="photo.png")
        first.commit()  # the bytes are now the server's, for alice: a second handle of them goes by hash
        assert first.created_new is True and first.file_path == "photo.png"
        again_file = tmp_path / "photo-again.png"
        again_file.write_bytes(known)
        again = client.assets.from_file(again_file)
        assert again.hash == first.hash
        again_file.unlink()  # the handle can no longer read its bytes: only HEAD by-hash + from-hash can commit it
        again.commit()
        assert again.id != first.id and again.created_new is True and again.file_path == "photo-again.png"
        absent = http.head(f"/api/v2/assets/by-hash/{client.assets.from_bytes(fresh).hash}")
        assert absent.status_code == 404  # so the next handle uploads its bytes (multipart)
        uploaded = client.assets.from_bytes(fresh, filename="fresh.png")
        assert uploaded.commit() and uploaded.created_new is True
        link = uploaded.get_download_url()
        assert link.url == f"{server.base_url}/api/v2/assets/{uploaded.id}/content" and link.expires_at is None
        assert http.get(link.url).content == fresh
        runs = []
        try:
            for backend, (handle, seed) in enumerate(((again, 201), (uploaded, 202))):
                only_backend(server, backend)
                job = client.submit(client.workflows.from_json(image_to_image_graph(handle, seed=seed)))
                runs.append((backend, seed, job.wait(timeout=60)))
        finally:
            only_backend(server, None)
        plain = client.run(client.workflows.from_json(image_to_image_graph("photo.png", seed=203)), timeout=60)
    for backend, seed, job in runs:
        assert job.status == "succeeded" and [o.node_id for o in job.outputs] == ["9"], job.error
        emu, entry = prompt_of(server, "3", "seed", seed)
        assert emu is server.emulators[backend]  # each backend ran one of them
        delivered = viewed(emu, entry["prompt"][2]["10"]["inputs"]["image"], "input")
        assert delivered == (known if seed == 201 else fresh)
    assert plain.status == "succeeded"
    emu, entry = prompt_of(server, "3", "seed", 203)
    loaded = entry["prompt"][2]["10"]["inputs"]["image"]
    assert loaded != "photo.png" and viewed(emu, loaded, "input") == known  # alice's photo.png, by its digest


def test_another_keys_bytes_are_not_known_by_hash(server: V2Server, tmp_path: Path):
    mine = png((1, 2, 3))
    with server.sdk("alice") as alice:
        alice.assets.from_bytes(mine, filename="mine.png").commit()
    path = tmp_path / "mine.png"
    path.write_bytes(mine)
    with server.sdk("bob") as bob:
        theirs = bob.assets.from_file(path)
        assert theirs.hash
        path.unlink()
        with pytest.raises(FileNotFoundError):  # HEAD by-hash said no: the SDK had to upload, and cannot
            theirs.commit()


def events_of(client: Comfy, graph: dict[str, Any]) -> tuple[Any, list[Any]]:
    job = client.submit(client.workflows.from_json(graph))
    return job, list(job.events())


def test_the_sdks_events_to_the_end_with_previews_and_outputs(server: V2Server):
    with server.sdk("alice") as client, stepping(server, 0.1):
        job, events = events_of(client, text_to_image_graph(seed=301, steps=12))
        kinds = [type(event).__name__ for event in events]
        assert isinstance(events[0], StatusChange) and events[0].status in ("queued", "running"), kinds
        assert isinstance(events[-1], StatusChange) and events[-1].status == "succeeded", kinds
        assert sum(isinstance(event, StatusChange) for event in events) >= 2
        progress = [event for event in events if isinstance(event, Progress)]
        assert any(event.current_node == "3" and event.steps == 12 for event in progress), kinds
        previews = [event for event in events if isinstance(event, Preview)]
        assert previews and previews[-1].node_id == "3" and previews[-1].content_type == "image/jpeg"
        with Image.open(io.BytesIO(previews[-1].data)) as image:
            assert image.format == "JPEG" and image.size[0] > 0
        ready = [i for i, event in enumerate(events) if isinstance(event, OutputReady)]
        assert len(ready) == 1 and ready[0] == len(events) - 2, kinds  # just before the terminal status
        streamed = events[ready[0]].output
        [output] = job.refresh().outputs
        assert streamed.id == output.id and streamed.name == output.name
        assert streamed.to_bytes() == output.to_bytes() and output.to_bytes().startswith(b"\x89PNG")


def test_a_running_job_is_canceled_through_the_sdk(server: V2Server):
    with server.sdk("alice") as client, server.http("alice") as http, stepping(server, 0.5):  # 40 steps: 20 s
        job = client.submit(client.workflows.from_json(text_to_image_graph(seed=401, steps=40)))
        wait_for_job(http, job.id, ("running",), timeout_s=20)
        assert job.cancel().status == "canceling"  # its backend stops it at the next step
        assert client.jobs.get(job.id).status in ("canceling", "canceled")
        with pytest.raises(JobFailed) as failed:
            job.result()
        assert job.status == "canceled" and "canceled" in str(failed.value)
        assert job.cancel().status == "canceled"  # asked again: it stays as it is
    _, entry = prompt_of(server, "3", "seed", 401)
    messages = [name for name, _ in entry["status"]["messages"]]
    assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
    assert "execution_interrupted" in messages and "execution_success" not in messages
    assert "9" not in entry["outputs"]  # stopped before it saved anything


def submit_labelled(client: Comfy, count: int, **labels: str) -> list[str]:
    return [client.submit(client.workflows.from_json(basic_graph(color=i)), metadata={**labels, "n": str(i)}).id
            for i in range(count)]


def test_list_jobs_by_labels_pages_newest_first_and_only_the_keys_own(server: V2Server):
    batch = uuid.uuid4().hex[:12]
    with server.sdk("alice") as alice, server.sdk("bob") as bob:
        mine = submit_labelled(alice, 7, batch=batch, team="red")
        other = submit_labelled(alice, 2, batch=batch, team="blue")
        theirs = submit_labelled(bob, 3, batch=batch, team="red")
        assert alice.jobs.get(mine[0]).metadata == {"batch": batch, "team": "red", "n": "0"}
        paged = list(alice.list_jobs(metadata={"batch": batch, "team": "red"}, limit=2))  # 4 pages
        assert [job.id for job in paged] == list(reversed(mine))
        assert all(job.metadata["team"] == "red" and job.create_time is not None for job in paged)
        times = [job.create_time for job in paged]
        assert times == sorted(times, reverse=True)  # type: ignore[type-var]
        assert [job.id for job in alice.list_jobs(metadata={"batch": batch}, limit=3)] == list(reversed(mine + other))
        assert [job.id for job in alice.list_jobs(metadata={"batch": batch, "n": "1"})] == [other[1], mine[1]]
        assert list(alice.list_jobs(metadata={"batch": batch, "team": "green"})) == []
        assert [job.id for job in bob.list_jobs(metadata={"batch": batch}, limit=1)] == list(reversed(theirs))
        everything = [job.id for job in alice.list_jobs(limit=5)]
        assert len(everything) == len(set(everything)) and set(mine + other) <= set(everything)
        assert not set(theirs) & set(everything)  # another key's jobs never appear
    with server.sdk("ops") as admin:  # an admin lists every key's
        assert {job.id for job in admin.list_jobs(metadata={"batch": batch})} == set(mine + other + theirs)
