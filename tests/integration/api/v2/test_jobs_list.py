"""Comfy API v2 over HTTP on a daemon with no backend (jobs stay queued): the list (labels, filters, cursors, each
key its own), queue positions, a queued job's cancel, quotas as queue_full / rate_limited, 401s in the v2
envelope, the open health check, and concurrent submissions with one Idempotency-Key."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.api.test_auth import ADMIN_KEY, ALICE_KEY, CAROL_KEY, as_key, secured
from tests.support.daemon import make_settings, running_daemon
from tests.support.graphs import basic_graph


def code_of(response) -> str:
    return response.json()["error"]["code"]


@pytest.fixture
async def idle(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as client:
        yield client


async def submit(client, **body):
    response = await client.post("/api/v2/jobs", json={"workflow": basic_graph(), **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_jobs_list_newest_first_with_labels_and_cursors(idle):
    ids = [(await submit(idle, metadata={"batch": "b1", "n": str(i)}))["id"] for i in range(5)]
    other = await submit(idle, metadata={"batch": "b2"})
    assert other["metadata"] == {"batch": "b2"}
    seen, cursor = [], None
    while True:
        page = (await idle.get("/api/v2/jobs", params={"limit": 2, "metadata[batch]": "b1",
                                                       **({"cursor": cursor} if cursor else {})})).json()
        seen += page["jobs"]
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert [j["id"] for j in seen] == list(reversed(ids))
    assert set(seen[0]) == {"id", "status", "create_time", "update_time", "metadata"}
    assert seen[0]["status"] == "queued" and seen[0]["metadata"] == {"batch": "b1", "n": "4"}
    both = (await idle.get("/api/v2/jobs", params={"metadata[batch]": "b1", "metadata[n]": "2"})).json()
    assert [j["id"] for j in both["jobs"]] == [ids[2]] and "next_cursor" not in both
    assert len((await idle.get("/api/v2/jobs")).json()["jobs"]) == 6


@pytest.mark.parametrize(("params", "code"), [
    ({"cursor": "nope!"}, "invalid_cursor"), ([("cursor", "eyJ9"), ("cursor", "eyJ9")], "invalid_cursor"),
    ({"metadata[bad key]": "x"}, "invalid_metadata_filter"),
    ({f"metadata[k{i}]": "x" for i in range(4)}, "invalid_metadata_filter"),
    ([("metadata[k]", "a"), ("metadata[k]", "b")], "invalid_metadata_filter"),
    ({"metadata[k]": "a\u202eb"}, "invalid_metadata_filter"),
    ({"limit": "0"}, "invalid_request"), ({"limit": "101"}, "invalid_request"), ({"limit": "x"}, "invalid_request"),
])
async def test_a_bad_list_query_is_refused(idle, params, code):
    response = await idle.get("/api/v2/jobs", params=params)
    assert response.status_code == 400 and code_of(response) == code


async def test_bad_labels_are_refused_at_submission(idle):
    response = await idle.post("/api/v2/jobs", json={"workflow": basic_graph(), "metadata": {"k": 1}})
    assert response.status_code == 422 and code_of(response) == "metadata_invalid"


async def test_queue_positions_and_a_queued_jobs_cancel(idle):
    jobs = [await submit(idle) for _ in range(3)]
    assert [j["queue_position"] for j in jobs] == [1, 2, 3]
    canceled = await idle.post(jobs[0]["urls"]["cancel"])
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert canceled.json()["queue_position"] is None
    assert (await idle.post(jobs[0]["urls"]["cancel"])).json()["status"] == "canceled"  # idempotent
    assert [(await idle.get(j["urls"]["self"])).json()["queue_position"] for j in jobs[1:]] == [1, 2]


async def test_concurrent_submissions_with_one_key_make_exactly_one_job(idle):
    answers = await asyncio.gather(*(idle.post("/api/v2/jobs", json={"workflow": basic_graph()},
                                               headers={"Idempotency-Key": "once"}) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [422] * 7
    assert {code_of(a) for a in answers if a.status_code == 422} == {"idempotency_key_reuse"}
    assert len((await idle.get("/api/v2/jobs")).json()["jobs"]) == 1


async def test_auth_quotas_health_and_other_keys_jobs(tmp_path: Path, redis_url):
    settings = secured(tmp_path, redis_url, quotas={"max_queued": 100, "submissions_per_minute": 1, "burst": 1})
    async with running_daemon(settings) as api:
        alice, carol, admin = as_key(api, ALICE_KEY), as_key(api, CAROL_KEY), as_key(api, ADMIN_KEY)
        for client in (api, as_key(api, "not-a-key-0123456789abcdef")):
            refused = await client.get("/api/v2/jobs")
            assert refused.status_code == 401 and code_of(refused) == "unauthorized"
            assert refused.json()["error"]["details"] is None
        health = await api.get("/api/v2/health")
        assert (health.status_code, health.json()) == (200, {"status": "healthy"})
        theirs = await submit(alice)
        limited = await alice.post("/api/v2/jobs", json={"workflow": basic_graph()},
                                   headers={"Idempotency-Key": "after-429"})
        assert limited.status_code == 429 and code_of(limited) == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        for _ in range(2):  # carol: at most 2 unfinished, no rate
            await submit(carol)
        full = await carol.post("/api/v2/jobs", json={"workflow": basic_graph()}, headers={"Idempotency-Key": "k"})
        assert full.status_code == 429 and code_of(full) == "queue_full" and int(full.headers["retry-after"]) >= 1
        for path in ("", "/workflow"):
            assert code_of(await carol.get(f"/api/v2/jobs/{theirs['id']}{path}")) == "not_found"
        assert code_of(await carol.post(f"/api/v2/jobs/{theirs['id']}/cancel")) == "not_found"
        assert theirs["id"] not in [j["id"] for j in (await carol.get("/api/v2/jobs")).json()["jobs"]]
        assert len((await carol.get("/api/v2/jobs")).json()["jobs"]) == 2
        assert len((await admin.get("/api/v2/jobs")).json()["jobs"]) == 3
        await carol.post("/api/v2/jobs/" + (await carol.get("/api/v2/jobs")).json()["jobs"][0]["id"] + "/cancel")
        again = await carol.post("/api/v2/jobs", json={"workflow": basic_graph()}, headers={"Idempotency-Key": "k"})
        assert again.status_code == 201  # the key the queue_full refusal released
        for client in (alice, carol, admin):
            await client.aclose()
