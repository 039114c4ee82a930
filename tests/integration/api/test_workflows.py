"""Workflows through the REST API, run on emulated ComfyUI backends: CRUD, parameters, uploads, image to image."""
from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.daemon import make_settings, running_daemon, wait_for_pool, wait_for_tasks
from tests.support.graphs import text_to_image_graph
from tests.support.paths import ROOT
from tests.support.ports import free_port

EXAMPLES = ROOT / "config" / "workflows"


def png(color: tuple, size: tuple = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def settings_for(tmp_path: Path, redis_url: str, *emulators, **extra):
    backends = [{"name": f"emu{i}", "url": e.url} for i, e in enumerate(emulators)]
    return make_settings(tmp_path, redis_url, static_backends=backends,
                         workflows={"directory": str(EXAMPLES)}, **extra)


async def output_bytes(api, task) -> bytes:
    [output] = task["outputs"]
    response = await api.get(f"/api/tasks/{task['id']}/outputs/{output['filename']}")
    assert response.status_code == 200
    return response.content


SIMPLE = {"graph": text_to_image_graph(),
          "params": {"seed": {"type": "int", "target": "3.seed", "min": 0},
                     "steps": {"type": "int", "target": {"node": "3", "input": "steps"}, "default": 2, "min": 1,
                               "max": 50},
                     "size": {"type": "int", "target": ["5.width", "5.height"], "min": 16, "max": 512}},
          "ui": {"nodes": [], "links": [], "version": 0.4},
          "description": "a test workflow"}


async def test_crud(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        created = await api.put("/api/workflows/simple", json=SIMPLE)
        assert created.status_code == 201 and created.json() == {"name": "simple", "version": 1, "changed": True}
        assert created.headers["etag"] == '"1"'
        again = await api.put("/api/workflows/simple", json=SIMPLE)
        assert again.status_code == 200 and again.json()["changed"] is False and again.json()["version"] == 1

        fetched = await api.get("/api/workflows/simple")
        body = fetched.json()
        assert fetched.headers["etag"] == '"1"'
        assert body["graph"] == SIMPLE["graph"] and body["ui"] == SIMPLE["ui"] and body["versions"] == [1]
        assert body["params"]["size"]["target"] == [{"node": "5", "input": "width"}, {"node": "5", "input": "height"}]
        assert body["params"]["steps"]["min"] == 1 and body["description"] == "a test workflow"

        changed = {**SIMPLE, "description": "second"}
        stale = await api.put("/api/workflows/simple", json=changed, headers={"If-Match": '"7"'})
        assert stale.status_code == 412 and "at version 1, not 7" in stale.json()["detail"]
        replaced = await api.put("/api/workflows/simple", json=changed, headers={"If-Match": '"1"'})
        assert replaced.status_code == 200 and replaced.json()["version"] == 2
        assert (await api.get("/api/workflows/simple?version=1")).json()["description"] == "a test workflow"
        assert (await api.get("/api/workflows/simple")).json()["versions"] == [1, 2]

        listing = (await api.get("/api/workflows")).json()
        assert [w["name"] for w in listing["workflows"]] == ["simple"] and listing["file_errors"] == []
        assert "graph" not in listing["workflows"][0] and listing["workflows"][0]["version"] == 2

        assert (await api.delete("/api/workflows/simple")).status_code == 204
        assert (await api.get("/api/workflows/simple")).status_code == 404
        assert (await api.delete("/api/workflows/simple")).status_code == 404
        assert (await api.get("/api/workflows")).json()["workflows"] == []


@pytest.mark.parametrize("name, body, status, reason", [
    ("bad name", SIMPLE, 422, "name: a workflow name is"),
    ("ok", {"graph": {}}, 422, "graph: prompt has no nodes"),
    ("ok", {"params": {}}, 422, "graph: Field required"),
    ("ok", {**SIMPLE, "vram": 8}, 422, "vram: unknown field"),
    ("ok", {**SIMPLE, "params": {"seed": {"type": "int", "target": "99.seed"}}}, 422,
     "params.seed: target node '99' is not in the graph"),
    ("ok", {**SIMPLE, "params": {"seed": {"type": "colour", "target": "3.seed"}}}, 422, "params.seed.type"),
    ("ok", {**SIMPLE, "params": {"x": {"type": "int", "target": "3.model"}}}, 422, "a link to another node"),
    ("ok", {"graph": {"nodes": [], "links": []}}, 422, "UI format"),
])
async def test_bad_workflows_are_refused_with_the_field_named(tmp_path: Path, redis_url, name, body, status, reason):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        response = await api.put(f"/api/workflows/{name}", json=body)
        assert response.status_code == status and reason in response.json()["detail"], response.json()
        assert (await api.get("/api/workflows")).json()["workflows"] == []


async def test_infer_candidate_parameters(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        graph = json.loads((EXAMPLES / "image-to-image-api.json").read_text())
        candidates = (await api.post("/api/workflows/infer", json={"graph": graph})).json()["params"]
        assert candidates["image"]["type"] == "image" and candidates["seed"]["type"] == "int"
        assert candidates["denoise"] == {**candidates["denoise"], "type": "float",
                                         "target": [{"node": "3", "input": "denoise"}]}
        # the candidates can be stored as they are
        stored = await api.put("/api/workflows/inferred", json={"graph": graph, "params": candidates})
        assert stored.status_code == 201, stored.json()
        bad = await api.post("/api/workflows/infer", json={"graph": [1]})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("graph:")


async def test_run_text_to_image_with_parameters(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    async with running_daemon(settings_for(tmp_path, redis_url, emu)) as api:
        listing = (await api.get("/api/workflows")).json()
        assert {"text-to-image", "image-to-image"} <= {w["name"] for w in listing["workflows"]}
        run = await api.post("/api/workflows/text-to-image/run",
                             json={"params": {"prompt": "a red barn", "width": 96, "height": 80, "steps": 3}})
        assert run.status_code == 201, run.json()
        created = run.json()
        assert created["workflow"] == "text-to-image" and created["workflow_version"] == 1
        seed = created["params"]["seed"]
        assert isinstance(seed, int) and seed >= 0  # chosen at submission, recorded
        assert created["params"]["negative"] == "blurry, low quality"  # the map's default

        by_tasks = await api.post("/api/tasks", json={"workflow": "text-to-image",
                                                      "params": {"prompt": "a red barn", "width": 96, "height": 80,
                                                                 "steps": 3, "seed": seed}})
        assert by_tasks.status_code == 201
        first, second = await wait_for_tasks(api, [created["id"], by_tasks.json()["id"]])
        for task in (first, second):
            assert task["status"] == "completed", task
            graph = task["prompt"]  # the resolved graph is kept with the task
            assert graph["6"]["inputs"]["text"] == "a red barn"
            assert graph["3"]["inputs"]["seed"] == seed and graph["3"]["inputs"]["steps"] == 3
            assert graph["3"]["inputs"]["cfg"] == 7.0  # not a parameter given: the graph's own value
            assert picture(await output_bytes(api, task)).size == (96, 80)
        # the same seed and prompt make the same picture
        assert await output_bytes(api, first) == await output_bytes(api, second)


@pytest.mark.parametrize("params, reason", [
    ({}, "params.prompt: required"),
    ({"prompt": "x", "colour": "red"}, "params.colour: unknown parameter"),
    ({"prompt": "x", "steps": "many"}, "params.steps: must be an integer"),
    ({"prompt": "x", "steps": 151}, "params.steps: must be an integer between 1 and 150, got 151"),
    ({"prompt": "x", "width": 32}, "params.width: must be an integer between 64 and 2048, got 32"),
    ({"prompt": "x", "sampler": "heun"}, "params.sampler: must be one of"),
    ({"prompt": "x", "cfg": None}, "params.cfg: must be a number"),
    ({"prompt": 3, "steps": 0},
     "params.prompt: must be a string, got 3; params.steps: must be an integer between 1 and 150, got 0"),
    # a value cannot become a link to another node, or a node of its own
    ({"prompt": ["4", 0]}, "params.prompt: must be a string"),
    ({"prompt": "x", "seed": ["4", 0]}, "params.seed: must be an integer"),
    ({"prompt": {"class_type": "SaveImage", "inputs": {}}}, "params.prompt: must be a string"),
    ({"prompt": "x", "sampler": ["euler"]}, "params.sampler: must be one of"),
])
async def test_bad_parameters_are_refused_by_name(tmp_path: Path, redis_url, params, reason):
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        for path, body in (("/api/workflows/text-to-image/run", {"params": params}),
                           ("/api/tasks", {"workflow": "text-to-image", "params": params})):
            response = await api.post(path, json=body)
            assert response.status_code == 422 and reason in response.json()["detail"], response.json()
        assert (await api.get("/api/pool")).json()["queue_length"] == 0


@pytest.mark.parametrize("params, reason", [
    # a seed has ComfyUI's bounds even before any backend answers; a giant value is quoted short
    ({"prompt": "x", "seed": 99999999999999999999999999999},
     "params.seed: must be an integer between 0 and 18446744073709551615, got 99999999999999999999…"),
    ({"prompt": "x", "seed": 2**64}, "params.seed: must be an integer between 0 and 18446744073709551615, got "),
    ({"prompt": "x", "steps": 1e308}, "params.steps: must be an integer between 1 and 150, got 1e+308"),
    ({"prompt": "x", "steps": 2.5}, "params.steps: must be an integer between 1 and 150, got 2.5"),
    ({"prompt": "x", "steps": True}, "params.steps: must be an integer between 1 and 150, got True"),
])
async def test_integers_are_held_to_their_bounds_and_quoted_short(tmp_path: Path, redis_url, params, reason):
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        for path, body in (("/api/workflows/text-to-image/run", {"params": params}),
                           ("/api/tasks", {"workflow": "text-to-image", "params": params})):
            response = await api.post(path, json=body)
            detail = response.json()["detail"]
            assert response.status_code == 422 and detail.startswith(reason) and len(detail) < 120, detail
        assert (await api.get("/api/pool")).json()["queue_length"] == 0


async def test_a_run_is_held_to_the_bounds_and_choices_the_pool_reports(tmp_path: Path, redis_url, emulator):
    unbounded = {"graph": text_to_image_graph(),
                 "params": {"steps": {"type": "int", "target": "3.steps"},
                            "sampler": {"type": "string", "target": "3.sampler_name"}}}
    async with running_daemon(settings_for(tmp_path, redis_url, emulator())) as api:
        await wait_for_pool(api, lambda pool: pool["backends"] and pool["backends"][0]["status"] == "healthy")
        assert (await api.put("/api/workflows/loose", json=unbounded)).status_code == 201
        too_many = await api.post("/api/workflows/loose/run", json={"params": {"steps": 10001}})
        assert too_many.status_code == 422  # KSampler's steps: 1..10000, as the backend's /object_info says
        assert too_many.json()["detail"] == "params.steps: must be an integer between 1 and 10000, got 10001"
        # the graph the parameters make is checked as POST /prompt checks one
        odd = await api.post("/api/tasks", json={"workflow": "loose", "params": {"sampler": "no-such-sampler"}})
        assert odd.status_code == 400, odd.json()
        [error] = odd.json()["node_errors"]["3"]["errors"]
        assert error["type"] == "value_not_in_list" and error["extra_info"]["input_name"] == "sampler_name"
        assert "no-such-sampler" in odd.json()["detail"]
        good = await api.post("/api/workflows/loose/run", json={"params": {"steps": 2, "sampler": "euler"}})
        assert good.status_code == 201
        [task] = await wait_for_tasks(api, [good.json()["id"]])
        assert task["status"] == "completed", task


@pytest.mark.parametrize("path, body, status, reason", [
    ("/api/workflows/nope/run", {"params": {}}, 404, "no workflow nope"),
    ("/api/tasks", {"workflow": "nope"}, 404, "no workflow nope"),
    ("/api/tasks", {"workflow": "text-to-image", "prompt": {}}, 422, "either 'prompt' or 'workflow'"),
    ("/api/tasks", {"prompt": text_to_image_graph(), "params": {}}, 422, "params apply to a workflow"),
    ("/api/tasks", {"workflow": 3}, 422, "workflow must be a workflow's name"),
    ("/api/workflows/text-to-image/run", {"params": [1]}, 422, "params must be a JSON object"),
    ("/api/workflows/text-to-image/run", {"prompt": "x"}, 422, "unknown field(s): prompt"),
])
async def test_bad_run_requests(tmp_path: Path, redis_url, path, body, status, reason):
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        response = await api.post(path, json=body)
        assert response.status_code == status and reason in response.json()["detail"], response.json()


async def test_image_to_image_with_an_upload_and_with_an_earlier_output(tmp_path: Path, redis_url, emulator):
    emus = [emulator(), emulator()]
    async with running_daemon(settings_for(tmp_path, redis_url, *emus)) as api:
        await wait_for_pool(api, lambda pool: sum(b["status"] == "healthy" for b in pool["backends"]) == 2)
        source = png((200, 30, 60))
        # denoise 0 keeps the input picture whole: what comes back is what went in, through the backend
        run = await api.post("/api/workflows/image-to-image/run",
                             data={"params": json.dumps({"prompt": "oil painting", "denoise": 0.0})},
                             files={"image": ("photo.png", source, "image/png")})
        assert run.status_code == 201, run.json()
        input_ref = run.json()["params"]["image"]
        assert set(input_ref) == {"input"} and input_ref["input"].endswith(".png")
        [first] = await wait_for_tasks(api, [run.json()["id"]])
        assert first["status"] == "completed", first
        result = picture(await output_bytes(api, first))
        assert result.size == (40, 30) and result.getpixel((5, 5)) == (200, 30, 60)
        uploaded_name = first["prompt"]["10"]["inputs"]["image"]
        assert uploaded_name.startswith("comfyart-") and uploaded_name.endswith(".png")
        backend = emus[int(first["backend"].removeprefix("static:emu"))]
        assert (backend.base_dir / "input" / uploaded_name).read_bytes() == source

        # chained: the output of that task feeds the next ones, on whichever backend takes them
        chained = [await api.post("/api/tasks", json={
            "workflow": "image-to-image",
            "params": {"image": {"task": first["id"], "filename": first["outputs"][0]["filename"]},
                       "prompt": "again", "denoise": 0.5, "seed": 3}}) for _ in range(4)]
        assert all(r.status_code == 201 for r in chained), [r.json() for r in chained]
        done = await wait_for_tasks(api, [r.json()["id"] for r in chained])
        assert {t["status"] for t in done} == {"completed"}, done
        assert {t["backend"] for t in done} == {"static:emu0", "static:emu1"}
        blended = [picture(await output_bytes(api, t)) for t in done]
        assert all(b.size == (40, 30) and b.getpixel((5, 5)) != (200, 30, 60) for b in blended)
        assert len({b.tobytes() for b in blended}) == 1  # same input, seed and prompt on either backend

        # two steps: store the input first, then refer to it
        stored = await api.post("/api/inputs", files={"file": ("x.png", png((0, 0, 255)), "image/png")})
        assert stored.status_code == 201 and stored.json()["content_type"] == "image/png"
        again = await api.post("/api/tasks", json={"workflow": "image-to-image", "params": {
            "image": {"input": stored.json()["input"]}, "prompt": "x", "denoise": 0.0}})
        [blue] = await wait_for_tasks(api, [again.json()["id"]])
        assert picture(await output_bytes(api, blue)).getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("files, data, status, reason", [
    ({"image": ("x.png", b"not a picture at all", "image/png")}, {"params": '{"prompt": "x"}'}, 415,
     "params.image: not an image (PNG, JPEG"),
    ({"image": ("x.png", png((1, 2, 3)), "image/png")}, {"params": "{not json"}, 400,
     "the 'params' form field is not valid JSON"),
    ({"image": ("x.png", png((1, 2, 3)), "image/png")}, {"params": '{"prompt": "x"}', "denoise": "0.5"}, 422,
     "unknown form field 'denoise'"),
    ({"image": ("x.png", png((1, 2, 3)), "image/png")},
     {"params": '{"prompt": "x", "image": {"input": "a.png"}}'}, 422, "params.image: given both as a file"),
    ({"mask": ("x.png", png((1, 2, 3)), "image/png")}, {"params": '{"prompt": "x"}'}, 422,
     "params.mask: unknown parameter"),
    ({}, {"params": '{"prompt": "x", "image": {"task": "01NOSUCH", "filename": "a.png"}}'}, 422,
     "params.image: no task 01NOSUCH"),
    ({}, {"params": '{"prompt": "x", "image": "example.png"}'}, 422, "params.image: must be an upload"),
])
async def test_bad_uploads(tmp_path: Path, redis_url, files, data, status, reason):
    async with running_daemon(settings_for(tmp_path, redis_url)) as api:
        response = await api.post("/api/workflows/image-to-image/run", data=data, files=files or None)
        assert response.status_code == status and reason in response.json()["detail"], response.json()
        assert (await api.get("/api/pool")).json()["queue_length"] == 0
        not_image = await api.post("/api/inputs", files={"file": ("a.png", b"GIF8", "image/png")})
        assert not_image.status_code == 415


async def test_queued_tasks_resolve_when_dispatched(tmp_path: Path, redis_url, emulator):
    """Tasks queued while no backend is up run the workflow version they were queued with, and fail clearly
    when what they need is gone by then."""
    port = free_port()
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "late", "url": f"http://127.0.0.1:{port}"}])
    async with running_daemon(settings) as api:
        assert (await api.put("/api/workflows/simple", json=SIMPLE)).status_code == 201
        pinned = (await api.post("/api/workflows/simple/run", json={"params": {"size": 48}})).json()
        changed = {**SIMPLE, "graph": text_to_image_graph(steps=9)}
        assert (await api.put("/api/workflows/simple", json=changed)).json()["version"] == 2

        graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
        await api.put("/api/workflows/load", json={"graph": graph,
                                                   "params": {"image": {"type": "image", "target": "1.image"}}})
        run = await api.post("/api/workflows/load/run", data={"params": "{}"},
                             files={"image": ("a.png", png((9, 9, 9)), "image/png")})
        input_id = run.json()["params"]["image"]["input"]
        (tmp_path / "data" / "inputs" / input_id[:2] / input_id).unlink()  # gone before any backend is up

        await api.put("/api/workflows/doomed", json=SIMPLE)
        doomed = (await api.post("/api/workflows/doomed/run", json={})).json()
        assert (await api.delete("/api/workflows/doomed")).status_code == 204
        from redis.asyncio import from_url
        async with from_url(redis_url) as raw:
            await raw.delete("comfyart:workflow-versions:doomed")  # as if the retention had run out

        ids = [pinned["id"], run.json()["id"], doomed["id"]]
        assert {t["status"] for t in [(await api.get(f"/api/tasks/{i}")).json() for i in ids]} == {"pending"}
        emulator(port=port)
        pinned_task, missing_input, gone = await wait_for_tasks(api, ids, timeout_s=30)
        assert pinned_task["status"] == "completed" and pinned_task["workflow_version"] == 1
        assert pinned_task["prompt"]["3"]["inputs"]["steps"] == 2  # version 1's graph and default
        assert pinned_task["prompt"]["5"]["inputs"]["width"] == 48
        assert missing_input["status"] == "failed" and "params.image: no uploaded input" in missing_input["error"]
        assert gone["status"] == "failed" and "workflow doomed version 1 is no longer stored" in gone["error"]


async def test_a_refused_upload_requeues_the_task_and_never_posts_the_prompt(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    emu.control(refuse_uploads=100)
    settings = settings_for(tmp_path, redis_url, emu, tracking={"max_retries": 1})
    async with running_daemon(settings) as api:
        run = await api.post("/api/workflows/image-to-image/run", data={"params": '{"prompt": "x"}'},
                             files={"image": ("a.png", png((1, 2, 3)), "image/png")})
        [refused] = await wait_for_tasks(api, [run.json()["id"]])
        assert refused["status"] == "failed" and refused["attempts"] == 2
        assert "gave up after 2 attempts; the last: could not upload an input to static:emu0" in refused["error"]
        assert (await api.get("/api/pool")).json()["backends"][0]["inflight"] == 0  # the slot was given back
        assert httpx.get(emu.url + "/history").json() == {}  # no prompt reached the backend

        emu.control(refuse_uploads=1)  # one refusal, then the retry goes through
        retry = await api.post("/api/workflows/image-to-image/run", data={"params": '{"prompt": "x"}'},
                               files={"image": ("a.png", png((1, 2, 3)), "image/png")})
        [done] = await wait_for_tasks(api, [retry.json()["id"]])
        assert done["status"] == "completed" and done["attempts"] == 2, done


async def test_bad_workflow_files_never_stop_the_daemon(tmp_path: Path, redis_url):
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "good-api.json").write_text(json.dumps(text_to_image_graph()))
    (directory / "broken-api.json").write_text("{ not json")
    (directory / "wrong.params.yaml").write_text("params: {seed: {type: int, target: 3.seed}}\n")
    settings = make_settings(tmp_path, redis_url, workflows={"directory": str(directory)})
    async with running_daemon(settings) as api:
        listing = (await api.get("/api/workflows")).json()
        assert [w["name"] for w in listing["workflows"]] == ["good"]
        assert [e.split(":")[0] for e in sorted(listing["file_errors"])] == ["broken-api.json", "wrong.params.yaml"]
        run = await api.post("/api/workflows/good/run", json={})
        assert run.status_code == 201 and run.json()["params"] == {}  # no map: the graph as it is
    missing = make_settings(tmp_path, redis_url, workflows={"directory": str(tmp_path / "absent")})
    async with running_daemon(missing) as api:
        [error] = (await api.get("/api/workflows")).json()["file_errors"]
        assert "cannot read the workflow directory" in error
