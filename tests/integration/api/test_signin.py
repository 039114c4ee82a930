"""Signing in once in a browser, for ComfyUI's editor at /comfy/: against a real daemon with auth on and a real
redis-server. The session cookie alone names the caller on the REST API and the ComfyUI WebSocket, for as long as
the credential it was opened with holds; another site's page cannot use it to change anything."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from comfyart.auth import session_token_digest
from tests.integration.api.test_auth import ADMIN_KEY, ADMIN_PASSWORD, ADMIN_USER, ALICE_KEY, CAROL_KEY, as_key, secured
from tests.support.daemon import make_settings, running_daemon
from tests.support.graphs import basic_graph

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def sign_in(api: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await api.post("/comfy/signin", data=fields, headers=FORM)


def session_of(answer: httpx.Response) -> str:
    """The session token of a sign-in's Set-Cookie."""
    assert answer.status_code == 303, answer.text
    (cookie,) = answer.headers.get_list("set-cookie")
    return cookie.split(";")[0].removeprefix("comfyart_session=")


def with_cookie(api: httpx.AsyncClient, token: str, **headers: str) -> httpx.AsyncClient:
    """A client that sends the session cookie alone: no Authorization, no cookie jar."""
    return httpx.AsyncClient(base_url=api.base_url, timeout=30, headers={"Cookie": f"comfyart_session={token}",
                                                                         **headers})


async def first_socket_frame(api: httpx.AsyncClient, token: str, origin: str | None = None) -> dict:
    url = str(api.base_url).replace("http", "ws") + "/ws?clientId=browser-tab"
    async with connect(url, additional_headers={"Cookie": f"comfyart_session={token}"},
                       origin=origin, open_timeout=10) as socket:
        return json.loads(await socket.recv())


async def test_a_key_signs_in_once_and_the_cookie_alone_names_the_caller(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        mine = (await as_key(api, ALICE_KEY).post("/api/tasks", json={"prompt": basic_graph(color=1)})).json()["id"]
        await as_key(api, CAROL_KEY).post("/api/tasks", json={"prompt": basic_graph(color=2)})
        page = await api.get("/comfy/signin", params={"next": "/comfy/?x=1"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert 'name="key"' in page.text and 'name="password"' in page.text  # an admin user is configured
        assert 'value="/comfy/?x=1"' in page.text

        answer = await sign_in(api, key=ALICE_KEY, next="/comfy/?x=1")
        assert answer.status_code == 303 and answer.headers["location"] == "/comfy/?x=1"
        (cookie,) = answer.headers.get_list("set-cookie")
        attributes = [part.strip() for part in cookie.split(";")]
        assert attributes[0].startswith("comfyart_session=") and len(attributes[0]) > 40
        assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"} == set(attributes[1:])  # no Secure: http
        token = session_of(answer)
        assert ALICE_KEY not in cookie
        # Redis holds only the token's digest, naming the key by its hash, with the configured life
        async with aioredis.from_url(redis_url, decode_responses=True) as redis:
            stored = await redis.get(f"comfyart:session:{session_token_digest(token)}")
            assert stored is not None and token not in stored and ALICE_KEY not in stored
            assert 604700 < await redis.ttl(f"comfyart:session:{session_token_digest(token)}") <= 604800
            assert await redis.keys(f"*{token}*") == []

        browser = with_cookie(api, token)
        listing = (await browser.get("/api/tasks")).json()
        assert [t["id"] for t in listing["tasks"]] == [mine]  # alice's own tasks only
        assert (await browser.get("/api/pool")).status_code == 403  # a client, not an admin
        frame = await first_socket_frame(api, token)
        assert frame["type"] == "status" and frame["data"]["sid"] == "browser-tab"
        assert 'Signed in as <b>alice</b>' in (await browser.get("/comfy/signin")).text


async def test_the_admin_user_signs_in_and_a_wrong_credential_gets_no_cookie(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        admin = await sign_in(api, user=ADMIN_USER, password=ADMIN_PASSWORD)
        assert admin.headers["location"] == "/comfy/"
        assert (await with_cookie(api, session_of(admin)).get("/api/pool")).status_code == 200
        for fields in ({"key": "ca_abcdefghijkl_wrong"}, {"key": ALICE_KEY + "x"}, {"key": ""},
                       {"user": ADMIN_USER, "password": "wrong password!"},
                       {"user": "rooot", "password": ADMIN_PASSWORD}, {"user": ADMIN_USER}, {}):
            refused = await sign_in(api, **fields, next="/comfy/")
            assert refused.status_code == 401, fields
            assert "set-cookie" not in refused.headers and "Sign-in failed" in refused.text
            assert ALICE_KEY not in refused.text and ADMIN_PASSWORD not in refused.text
        # the form only, and a small one
        assert (await api.post("/comfy/signin", json={"key": ALICE_KEY})).status_code == 415
        assert (await api.post("/comfy/signin", content=b"key=" + b"x" * 20000, headers=FORM)).status_code == 413


async def test_a_sign_in_goes_only_to_a_path_of_the_editor(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        # only the Location is looked at: nothing is ever sent to these hosts
        for target in ("https://evil.example/", "//evil.example/comfy/", "/\\evil.example", "/api/keys", ""):
            answer = await sign_in(api, key=ALICE_KEY, next=target)
            assert answer.status_code == 303 and answer.headers["location"] == "/comfy/", target


async def test_a_revoked_key_ends_its_sessions_at_once_and_signing_out_ends_one(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        admin = as_key(api, ADMIN_KEY)
        made = (await admin.post("/api/keys", json={"name": "bob", "role": "client"})).json()
        bob = with_cookie(api, session_of(await sign_in(api, key=made["key"])))
        assert (await bob.get("/api/tasks")).status_code == 200
        assert (await admin.delete(f"/api/keys/{made['id']}")).status_code == 200
        refused = await bob.get("/api/tasks")
        assert refused.status_code == 401 and "sign in again" in refused.json()["detail"]

        token = session_of(await sign_in(api, key=ALICE_KEY))
        alice = with_cookie(api, token)
        assert (await alice.get("/api/tasks")).status_code == 200
        out = await alice.post("/comfy/signout")
        assert out.status_code == 303 and out.headers["location"] == "/comfy/signin"
        assert "comfyart_session=;" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        assert (await alice.get("/api/tasks")).status_code == 401
        with pytest.raises(InvalidStatus) as closed:
            await first_socket_frame(api, token)
        assert closed.value.response.status_code == 403


async def test_an_expired_or_unknown_session_is_refused(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        token = session_of(await sign_in(api, key=ALICE_KEY))
        async with aioredis.from_url(redis_url, decode_responses=True) as redis:
            assert await redis.pexpire(f"comfyart:session:{session_token_digest(token)}", 1)
        for stale in (token, "unknown-token", ALICE_KEY):  # nor is a key itself a session
            answer = await with_cookie(api, stale).get("/api/tasks")
            assert answer.status_code == 401 and answer.json()["detail"].startswith("session expired"), stale
        # open pages stay open with a stale cookie
        assert (await with_cookie(api, token).get("/comfy/signin")).status_code == 200


async def test_another_sites_page_cannot_use_the_cookie(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        token = session_of(await sign_in(api, key=ALICE_KEY))
        own = str(api.base_url).rstrip("/")
        body = {"prompt": basic_graph()}
        refused = await with_cookie(api, token, Origin="http://evil.example").post("/api/tasks", json=body)
        assert refused.status_code == 403 and "another site" in refused.json()["detail"]
        assert (await with_cookie(api, token, Origin="null").delete("/api/tasks/x")).status_code == 403
        assert (await with_cookie(api, token, Origin=own).post("/api/tasks", json=body)).status_code == 201
        assert (await with_cookie(api, token).post("/api/tasks", json=body)).status_code == 201  # no Origin: no page
        # reading is not refused; a key in a header is not a cookie, so no Origin check applies
        assert (await with_cookie(api, token, Origin="http://evil.example").get("/api/tasks")).status_code == 200
        keyed = as_key(api, ALICE_KEY)
        assert (await keyed.post("/api/tasks", json=body, headers={"Origin": "http://evil.example"})).status_code == 201
        with pytest.raises(InvalidStatus) as closed:
            await first_socket_frame(api, token, origin="http://evil.example")
        assert closed.value.response.status_code == 403
        assert (await first_socket_frame(api, token, origin=own))["type"] == "status"
        # nor sign a browser in or out from elsewhere
        foreign = {**FORM, "Origin": "http://evil.example"}
        assert (await api.post("/comfy/signin", data={"key": ALICE_KEY}, headers=foreign)).status_code == 403
        assert (await with_cookie(api, token, Origin="http://evil.example").post("/comfy/signout")).status_code == 403
        assert (await with_cookie(api, token).get("/api/tasks")).status_code == 200


async def test_opening_the_editor_without_a_session_goes_to_the_sign_in_page(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        for path in ("/comfy/", "/comfy"):
            answer = await api.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/comfy/signin?next=/comfy/"
        # the editor's other paths, and a wrong key, get 401 as the API does
        assert (await api.get("/comfy/api/users")).status_code == 401
        assert (await api.get("/comfy/", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_a_session_ends_with_its_credential_in_the_configuration(tmp_path: Path, redis_url):
    settings = secured(tmp_path, redis_url)
    async with running_daemon(settings) as api:
        alice = session_of(await sign_in(api, key=ALICE_KEY))
        root = session_of(await sign_in(api, user=ADMIN_USER, password=ADMIN_PASSWORD))
    # restarted with alice's key gone and the admin password changed
    changed = make_settings(tmp_path, redis_url, auth={
        "keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY}], "admin_user": ADMIN_USER,
        "admin_password": "a brand new password"})
    async with running_daemon(changed) as api:
        assert (await with_cookie(api, alice).get("/api/tasks")).status_code == 401
        assert (await with_cookie(api, root).get("/api/tasks")).status_code == 401
        assert (await with_cookie(api, session_of(await sign_in(api, user=ADMIN_USER, password="a brand new password"))
                                  ).get("/api/pool")).status_code == 200


async def test_with_auth_off_the_sign_in_page_sends_to_the_editor(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        for answer in (await api.get("/comfy/signin"), await sign_in(api, key="anything")):
            assert answer.status_code == 303 and answer.headers["location"] == "/comfy/"
            assert "set-cookie" not in answer.headers


async def test_a_guesser_gets_ten_tries_at_once_and_then_twenty_a_minute(tmp_path: Path, redis_url):
    async with running_daemon(secured(tmp_path, redis_url)) as api:
        wrong = [(await sign_in(api, key=f"guess-{i}-0123456789abcdefghij")).status_code for i in range(10)]
        assert wrong == [401] * 10
        refused = await sign_in(api, key=ALICE_KEY)  # counted before any credential is looked at
        assert refused.status_code == 429 and "set-cookie" not in refused.headers
        assert 1 <= int(refused.headers["retry-after"]) <= 3
        assert "too many sign-in attempts" in refused.text.lower()
        # the API's own callers are not slowed: a key in a header is no sign-in
        assert (await as_key(api, ALICE_KEY).get("/api/tasks")).status_code == 200
