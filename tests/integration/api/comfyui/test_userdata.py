"""ComfyUI's user manager through comfyart (api.comfyui.userdata) against a real redis-server: the requests the web
editor sends (its names URL-encoded, ``workflows%2Fx.json``) answered as ComfyUI answers them, each API key in a
space of its own, the quota, and bad names and bodies refused with a 4xx."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.support.daemon import make_settings, running_daemon

ALICE_KEY = "alice-client-key-0123456789abcdef"
BOB_KEY = "bob-client-key-0123456789abcdef01"
WORKFLOW = {"last_node_id": 1, "nodes": [{"id": 1, "type": "KSampler"}], "version": 0.4}


def keyed(api: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    # a Comfy-User header, as the page sends in multi-user mode, names nobody here: the key does
    return httpx.AsyncClient(base_url=api.base_url, timeout=30,
                             headers={"Authorization": f"Bearer {key}", "Comfy-User": "someone-else"})


def two_keys(tmp_path: Path, redis_url: str, **limits: int):
    auth = {"keys": [{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}]}
    return make_settings(tmp_path, redis_url, auth=auth, limits=limits)


async def test_the_editor_saves_lists_opens_moves_and_deletes_workflows(tmp_path: Path, redis_url):
    async with running_daemon(two_keys(tmp_path, redis_url)) as api:
        alice = keyed(api, ALICE_KEY)
        assert (await alice.get("/api/users")).json() == {"storage": "server", "migrated": True}
        assert (await alice.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")).status_code \
            == 404  # no workflow saved yet: ComfyUI's answer, which the page reads as none
        saved = await alice.post("/api/userdata/workflows%2Fmy%20flow.json?overwrite=false&full_info=true",
                                 content=json.dumps(WORKFLOW))
        assert saved.status_code == 200, saved.text
        info = saved.json()
        assert info["path"] == "workflows/my flow.json" and info["size"] == len(json.dumps(WORKFLOW))
        assert info["created"] == info["modified"] and info["modified"] > 1_700_000_000_000  # ms, as newer ComfyUI
        again = await alice.post("/api/userdata/workflows%2Fmy%20flow.json?overwrite=false", content=b"{}")
        assert (again.status_code, again.text) == (409, "File already exists")
        plain = await alice.post("/api/userdata/workflows%2Fsub%2Fb.json", content=b"{}")  # overwrite: the default
        assert plain.json() == "workflows/sub/b.json"
        await alice.post("/api/userdata/workflows%2F.index.json", content=b"{}")  # hidden: glob skips it

        listed = await alice.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
        assert [f["path"] for f in listed.json()] == ["my flow.json", "sub/b.json"]
        assert (await alice.get("/api/userdata?dir=workflows")).json() == ["my flow.json"]
        assert (await alice.get("/userdata?dir=workflows/&recurse=true&split=true")).json() == [
            ["my flow.json", "my flow.json"], ["sub/b.json", "sub", "b.json"]]

        opened = await alice.get("/api/userdata/workflows%2Fmy%20flow.json")
        assert opened.status_code == 200 and opened.json() == WORKFLOW
        assert opened.headers["content-type"].startswith("application/json")
        assert opened.headers["x-content-type-options"] == "nosniff"

        moved = await alice.post("/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json"
                                 "?overwrite=false&full_info=true")
        assert moved.status_code == 200 and moved.json()["path"] == "workflows/renamed.json"
        assert moved.json()["created"] == info["created"]
        assert (await alice.get("/api/userdata/workflows%2Fmy%20flow.json")).status_code == 404
        blocked = await alice.post("/api/userdata/workflows%2Frenamed.json/move/workflows%2Fsub%2Fb.json"
                                   "?overwrite=false")
        assert blocked.status_code == 409
        assert (await alice.delete("/api/userdata/workflows%2Frenamed.json")).status_code == 204
        assert (await alice.delete("/api/userdata/workflows%2Frenamed.json")).status_code == 404
        assert (await alice.get("/api/userdata?dir=workflows&recurse=true")).json() == ["sub/b.json"]


async def test_names_that_leave_the_users_space_or_are_malformed_get_400(tmp_path: Path, redis_url):
    async with running_daemon(two_keys(tmp_path, redis_url)) as api:
        alice = keyed(api, ALICE_KEY)
        for name in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%5Cb.json", "a%00b.json", "workflows%2F%2Fx.json",
                     "%252e%252e%2Fx.json", "C%3A%2Fx.json", "x" * 300):
            answer = await alice.post(f"/api/userdata/{name}", content=b"{}")
            assert answer.status_code == 400 and answer.text.startswith("Invalid path"), (name, answer.text)
            assert (await alice.get(f"/api/userdata/{name}")).status_code == 400, name
        assert (await alice.get("/api/userdata?dir=..")).status_code == 400
        assert (await alice.get("/api/userdata")).text == "Directory not provided"
        await alice.post("/api/userdata/a.json", content=b"1")
        assert (await alice.post("/api/userdata/a.json%2Fb.json", content=b"1")).status_code == 400  # a file, not a dir
        await alice.post("/api/userdata/d%2Fe.json", content=b"1")
        assert (await alice.post("/api/userdata/d", content=b"1")).status_code == 400  # a directory
        assert (await alice.post("/api/userdata/a/b/c", content=b"1")).status_code == 404  # no such route
        assert (await alice.post("/api/users", content=b"{")).status_code == 400
        assert (await alice.post("/api/users", json={"username": "default"})).json() == {"error": "Duplicate username."}
        assert (await alice.post("/api/users", json={"username": "Ann B"})).json().startswith("Ann-B_")


async def test_each_key_has_its_own_settings_and_files(tmp_path: Path, redis_url):
    async with running_daemon(two_keys(tmp_path, redis_url)) as api:
        alice, bob = keyed(api, ALICE_KEY), keyed(api, BOB_KEY)
        assert (await alice.post("/api/userdata/workflows%2Fsecret.json", content=b'{"a": 1}')).status_code == 200
        assert (await bob.get("/api/userdata/workflows%2Fsecret.json")).status_code == 404
        assert (await bob.get("/api/userdata?dir=workflows")).status_code == 404
        assert (await bob.delete("/api/userdata/workflows%2Fsecret.json")).status_code == 404
        moved = await bob.post("/api/userdata/workflows%2Fsecret.json/move/mine.json")
        assert moved.status_code == 404
        assert (await bob.post("/api/userdata/workflows%2Fsecret.json", content=b"{}")).status_code == 200  # his own
        assert (await alice.get("/api/userdata/workflows%2Fsecret.json")).json() == {"a": 1}

        assert (await alice.get("/api/settings")).json() == {}
        assert (await alice.post("/api/settings", json={"Comfy.A": 1, "Comfy.B": [1]})).status_code == 200
        assert (await alice.post("/api/settings", json={"Comfy.B": [], "Comfy.C": {"x": None}})).status_code == 200
        assert (await alice.post("/api/settings/Comfy.D", json="dark")).status_code == 200
        # the page saves settings one by one, several at once: none is lost
        await asyncio.gather(*(alice.post(f"/api/settings/Comfy.Many{i}", json=i) for i in range(12)))
        expected = {"Comfy.A": 1, "Comfy.B": [], "Comfy.C": {"x": None}, "Comfy.D": "dark",
                    **{f"Comfy.Many{i}": i for i in range(12)}}
        assert (await alice.get("/api/settings")).json() == expected
        assert (await alice.get("/api/settings/Comfy.D")).json() == "dark"
        assert (await alice.get("/api/settings/Comfy.Nothing")).json() is None
        # kept as ComfyUI keeps them: the user's comfy.settings.json, one of its files
        assert (await alice.get("/api/userdata/comfy.settings.json")).json() == expected
        assert (await bob.get("/api/settings")).json() == {}
        for body in (b"[1, 2]", b'"x"', b"{not json", b"null"):
            refused = await alice.post("/api/settings", content=body)
            assert refused.status_code == 400 and refused.text.startswith("Settings must be a JSON object"), body
        assert (await alice.post("/api/settings/Comfy.E", content=b"{oops")).status_code == 400
        assert (await alice.get("/api/settings")).json() == expected


async def test_the_quota_and_the_file_cap_answer_413(tmp_path: Path, redis_url):
    settings = two_keys(tmp_path, redis_url, userdata_max_bytes=10_000, userdata_max_file_bytes=4_000)
    async with running_daemon(settings) as api:
        alice, bob = keyed(api, ALICE_KEY), keyed(api, BOB_KEY)
        too_big = await alice.post("/api/userdata/big.bin", content=b"x" * 4_001)
        assert too_big.status_code == 413 and "limits.userdata_max_file_bytes" in too_big.text

        async def chunked():
            for _ in range(5):
                yield b"x" * 1_000

        assert (await alice.post("/api/userdata/streamed.bin", content=chunked())).status_code == 413
        for i in range(2):
            assert (await alice.post(f"/api/userdata/f{i}.bin", content=b"x" * 4_000)).status_code == 200
        full = await alice.post("/api/userdata/f2.bin", content=b"x" * 2_001)
        assert full.status_code == 413 and "limits.userdata_max_bytes" in full.text and "8000 used" in full.text
        assert (await alice.post("/api/userdata/f2.bin", content=b"x" * 2_000)).status_code == 200
        assert (await alice.post("/api/settings", json={"a": "x" * 100})).status_code == 413  # settings count too
        assert (await alice.post("/api/userdata/f0.bin", content=b"x" * 3_000)).status_code == 200  # shrinks
        assert (await alice.post("/api/settings", json={"a": "x" * 100})).status_code == 200
        assert (await bob.post("/api/userdata/f0.bin", content=b"x" * 4_000)).status_code == 200  # his own quota
        assert (await alice.get("/api/userdata/f0.bin")).headers["content-type"] == "application/octet-stream"


async def test_with_auth_off_everyone_shares_one_space(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        assert (await api.post("/userdata/user.css", content=b"body { color: red }")).status_code == 200
        css = await api.get("/api/userdata/user.css")
        assert css.headers["content-type"].startswith("text/css") and css.headers["content-disposition"] == "inline"
        assert (await api.post("/settings/Comfy.X", json=True)).status_code == 200
        assert (await api.get("/api/settings")).json() == {"Comfy.X": True}
        assert (await api.head("/api/userdata/user.css")).status_code == 200
