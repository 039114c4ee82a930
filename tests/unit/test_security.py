"""The pure parts of security: credentials, key shapes, who sees what, signed URLs, the rate limit, input limits,
file names, redaction, and when the daemon refuses to start."""
from __future__ import annotations

import base64
import json

import pytest

from comfyart.api.limits import JSONTooDeep, body_limit, json_depth_exceeds, parse_json
from comfyart.auth import (
    NOBODY,
    KeyRecord,
    Principal,
    Role,
    auth_problem,
    can_see,
    config_keys,
    credentials_from,
    hash_key,
    is_loopback,
    key_id_of,
    new_key,
    signature_valid,
    signed_query,
    url_signature,
)
from comfyart.comfy.protocol import Executed, Executing, Progress, graph_problem, parse_frame
from comfyart.config.sections import AuthConfig, LimitsConfig
from comfyart.config.settings import Settings
from comfyart.files.outputs import MAX_NAME_BYTES, safe_filename
from comfyart.models import socket_key
from comfyart.policy.rates import rate_limit
from comfyart.redact import redact_url
from comfyart.webhooks import address_is_public, literal_target_problem

ALICE = Principal(id="config:alice", name="alice", role=Role.CLIENT)
BOB = Principal(id="k2", name="bob", role=Role.CLIENT)
ADMIN = Principal(id="config:ops", name="ops", role=Role.ADMIN)


# ---------------------------------------------------------------------------------------------------- credentials
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("headers, query, token_in_query, expected", [
    ({"authorization": "Bearer abc"}, {}, False, ("abc", None, False)),
    ({"authorization": "bearer   abc  "}, {}, False, ("abc", None, False)),
    ({"authorization": basic("root", "p:w")}, {}, False, (None, ("root", "p:w"), False)),
    ({"authorization": "Basic bm9jb2xvbg=="}, {}, False, (None, None, True)),  # "nocolon"
    ({"authorization": "Basic ***"}, {}, False, (None, None, True)),
    ({"authorization": "Token abc"}, {}, False, (None, None, True)),
    ({"authorization": "Bearer"}, {}, False, (None, None, True)),
    ({"x-api-key": "abc"}, {}, False, ("abc", None, False)),
    ({}, {"token": ["abc"]}, True, ("abc", None, False)),
    ({}, {"token": ["abc"]}, False, (None, None, False)),  # a query token only where headers cannot be sent
    ({"authorization": "Bearer h"}, {"token": ["q"]}, True, ("h", None, False)),  # the header wins
    ({}, {}, True, (None, None, False)),
])
def test_credentials_a_request_presents(headers, query, token_in_query, expected):
    found = credentials_from(headers, query, token_in_query=token_in_query)
    assert (found.bearer, found.basic, found.malformed) == expected


def test_keys_carry_their_id_and_only_their_hash_is_kept():
    key_id, key = new_key()
    assert key_id_of(key) == key_id and len(key) > 50
    assert new_key()[1] != key
    record = KeyRecord(id=key_id, name="n", role=Role.CLIENT, sha256=hash_key(key), created_ms=1)
    assert KeyRecord.decode(key_id, record.encode()) == record
    assert key not in record.encode() and "sha256" not in json.dumps(record.describe())


@pytest.mark.parametrize("key", ["", "ca_", "ca_short_x", "xx_abcdefghijkl_secret", "ca_ABCDEFGHIJKL_secret",
                                 "ca_abcdefghijkl_", "ca_abcdefghijk1_secret", "ca_abcdefghijkl"])
def test_strings_that_are_not_keys_have_no_id(key):
    assert key_id_of(key) is None


@pytest.mark.parametrize("principal, owner, visible", [
    (ADMIN, None, True), (ADMIN, "config:alice", True), (ALICE, "config:alice", True), (ALICE, "k2", False),
    (ALICE, None, False), (BOB, "config:alice", False), (NOBODY, None, True), (NOBODY, "k2", True),
])
def test_who_sees_which_task(principal, owner, visible):
    assert can_see(principal, owner) is visible


def test_owners_and_socket_namespaces():
    assert NOBODY.owner is None and ALICE.owner == "config:alice"
    assert socket_key(None, "c") == "c"
    assert socket_key("config:alice", "c") != socket_key("k2", "c") != socket_key(None, "c")


# ---------------------------------------------------------------------------------------------------- signed URLs
def test_signed_urls_open_only_the_path_they_were_made_for_until_they_expire():
    secret, path = b"s" * 32, "/api/tasks/T1/outputs/a.png"
    query = dict(part.split("=") for part in signed_query(secret, path, 2000).split("&"))
    assert signature_valid(secret, path, query["expires"], query["signature"], now=1999.5)
    assert signature_valid(secret, path, "2000", query["signature"], now=2000)
    assert not signature_valid(secret, path, "2000", query["signature"], now=2000.5)  # expired
    assert not signature_valid(secret, path, "2001", query["signature"], now=0)  # expiry moved
    assert not signature_valid(secret, "/api/tasks/T1/outputs/b.png", "2000", query["signature"], now=0)
    assert not signature_valid(b"t" * 32, path, "2000", query["signature"], now=0)  # another daemon's secret
    assert not signature_valid(secret, path, "-5", url_signature(secret, path, -5), now=0)
    assert not signature_valid(secret, path, None, query["signature"], now=0)
    assert not signature_valid(secret, path, "2000", None, now=0)


# ---------------------------------------------------------------------------------------------------- rate limit
def test_the_rate_limit_allows_a_burst_then_one_per_interval():
    now, tat, allowed = 1_000_000, None, []
    for _ in range(5):  # 60 a minute, bursts of 3: three at once, then refused
        decision = rate_limit(now_ms=now, tat_ms=tat, per_minute=60, burst=3)
        allowed.append(decision.allowed)
        tat = decision.tat_ms
    assert allowed == [True, True, True, False, False]
    refused = rate_limit(now_ms=now, tat_ms=tat, per_minute=60, burst=3)
    assert refused.retry_after_ms == 1000 and refused.tat_ms == tat  # a refusal costs nothing
    assert not rate_limit(now_ms=now + 999, tat_ms=tat, per_minute=60, burst=3).allowed
    later = rate_limit(now_ms=now + 1000, tat_ms=tat, per_minute=60, burst=3)
    assert later.allowed and not rate_limit(now_ms=now + 1000, tat_ms=later.tat_ms, per_minute=60, burst=3).allowed
    # idle long enough, the whole burst is back, and no more
    rested = now + 60_000
    assert [rate_limit(now_ms=rested, tat_ms=t, per_minute=60, burst=3).allowed
            for t in (later.tat_ms,)] == [True]
    tat = later.tat_ms
    count = 0
    while (decision := rate_limit(now_ms=rested, tat_ms=tat, per_minute=60, burst=3)).allowed:
        tat, count = decision.tat_ms, count + 1
    assert count == 3


@pytest.mark.parametrize("per_minute, burst, expected", [(600, 1, 1), (600, 10, 10), (7, 2, 2), (0.5, 1, 1)])
def test_the_burst_is_what_goes_at_once_at_any_rate(per_minute, burst, expected):
    tat, count = None, 0
    while (decision := rate_limit(now_ms=5_000, tat_ms=tat, per_minute=per_minute, burst=burst)).allowed:
        tat, count = decision.tat_ms, count + 1
    assert count == expected and decision.retry_after_ms == pytest.approx(60_000 / per_minute, abs=1)


def test_no_rate_means_no_limit():
    assert all(rate_limit(now_ms=1, tat_ms=10**12, per_minute=0, burst=1).allowed for _ in range(3))


# ---------------------------------------------------------------------------------------------------- input limits
@pytest.mark.parametrize("value, depth, exceeds", [
    (1, 1, False), ([], 1, False), ([[]], 1, True), ({"a": [1]}, 2, False), ({"a": [{}]}, 2, True),
    (json.loads("[" * 64 + "]" * 64), 64, False), (json.loads("[" * 65 + "]" * 65), 64, True),
])
def test_json_depth(value, depth, exceeds):
    assert json_depth_exceeds(value, depth) is exceeds


def test_parse_json_refuses_depth_and_garbage_with_value_errors():
    assert parse_json(b'{"a": [1, {"b": 2}]}', 3) == {"a": [1, {"b": 2}]}
    with pytest.raises(JSONTooDeep):
        parse_json("[" * 10 + "]" * 10, 5)
    with pytest.raises(JSONTooDeep):
        parse_json("[" * 200_000 + "]" * 200_000, 64)  # past the parser's own recursion limit
    with pytest.raises(ValueError):
        parse_json(b"\xff\xfe", 64)
    with pytest.raises(ValueError):
        parse_json("{", 64)


def test_uploads_get_their_own_body_limit():
    limits = LimitsConfig(max_body_bytes=2000, max_upload_bytes=5000)
    assert body_limit(limits, "application/json") == 2000
    assert body_limit(limits, "multipart/form-data; boundary=x") > 5000


@pytest.mark.parametrize("count, problem", [(3, None), (4, "prompt has 4 nodes; at most 3 are allowed")])
def test_graph_node_count(count, problem):
    graph = {str(i): {"class_type": "X", "inputs": {}} for i in range(count)}
    assert graph_problem(graph, max_nodes=3) == problem


@pytest.mark.parametrize("name, expected", [
    ("a.png", "a.png"), ("../../etc/passwd", "passwd"), ("/abs/x.png", "x.png"), ("..\\..\\win.png", "win.png"),
    ("..", "output"), (".", "output"), ("", "output"), ("dir/", "output"), ("a\x00b\n.png", "a_b_.png"),
])
def test_file_names_from_backends_become_one_harmless_component(name, expected):
    assert safe_filename(name) == expected


def test_long_file_names_are_cut_with_their_extension_kept():
    cut = safe_filename("é" * 300 + ".png")
    assert cut.endswith(".png") and len(cut.encode()) <= MAX_NAME_BYTES
    cut.encode().decode()  # never half a character
    assert len(safe_filename("x" * 1000).encode()) <= MAX_NAME_BYTES


# ---------------------------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://user:hunter2@redis:6379", "redis://user:***@redis:6379"),
    ("https://u:p@comfy.example:8188/x", "https://u:***@comfy.example:8188/x"),
    ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
])
def test_passwords_in_urls_are_hidden(url, shown):
    assert redact_url(url) == shown


# ---------------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("192.0.2.10", False), ("comfy.example", False), ("::", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


KEY = {"name": "ops", "role": "admin", "key": "k" * 24}


@pytest.mark.parametrize("auth, host, refused", [
    ({}, "127.0.0.1", False),
    ({}, "0.0.0.0", True),
    ({"allow_unauthenticated": True}, "0.0.0.0", False),
    ({"keys": [KEY]}, "0.0.0.0", False),
    ({"admin_user": "root", "admin_password": "p" * 12}, "0.0.0.0", False),
    ({"keys": [KEY], "enabled": False}, "0.0.0.0", True),
    ({"enabled": True}, "0.0.0.0", False),  # keys made with the CLI
])
def test_auth_off_is_refused_beyond_loopback_unless_forced(auth, host, refused):
    assert (auth_problem(AuthConfig(**auth), host) is not None) is refused


@pytest.mark.parametrize("auth, message", [
    ({"keys": [{"name": "a", "key": "short"}]}, "24 characters or more"),
    ({"keys": [{"name": "a"}]}, "give either key or key_sha256"),
    ({"keys": [{"name": "a", "key": "k" * 24, "key_sha256": "0" * 64}]}, "give either key or key_sha256"),
    ({"keys": [{"name": "a", "key_sha256": "nothex"}]}, "key_sha256"),
    ({"keys": [{"name": "a", "key": "k" * 24}, {"name": "a", "key": "j" * 24}]}, "unique"),
    ({"admin_user": "root"}, "go together"),
    ({"admin_user": "root", "admin_password": "short"}, "12 characters"),
    ({"keys": [{"name": "a", "key": "k" * 24, "role": "root"}]}, "role"),
])
def test_bad_auth_configuration_is_refused_by_field(auth, message):
    with pytest.raises(ValueError, match=message):
        Settings(auth=auth)


def test_configured_keys_are_held_by_hash_under_a_stable_owner_id():
    auth = AuthConfig(keys=[{"name": "ops", "role": "admin", "key": "k" * 24},
                            {"name": "ci", "key_sha256": hash_key("c" * 24), "max_queued": 3}])
    ops, ci = config_keys(auth)
    assert ops.id == "config:ops" and ops.role is Role.ADMIN and ops.sha256 == hash_key("k" * 24)
    assert ci.sha256 == hash_key("c" * 24) and ci.principal().max_queued == 3 and ci.role is Role.CLIENT


# ---------------------------------------------------------------------------------------------------- junk frames
@pytest.mark.parametrize("frame", [
    "not json", "[1]", '{"type": "progress", "data": "x"}', "[" * 100_000 + "]" * 100_000,
    '{"type": "progress", "data": {"prompt_id": ["a"], "value": 1, "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": ["x"], "value": 1, "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": "1", "value": "lots", "max": 2}}',
    '{"type": "progress", "data": {"prompt_id": "p", "node": "1", "value": 1e999, "max": 2}}',
    '{"type": "executing", "data": {"prompt_id": "p", "node": {"a": 1}}}',
    '{"type": "executing", "data": {"prompt_id": "p", "node": true}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": "1,2"}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": [[1]]}}',
    '{"type": "executed", "data": {"prompt_id": "p", "node": null, "output": {}}}',
    '{"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": "junk"}}',
    '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}',
    '{"type": "execution_error", "data": {"prompt_id": "p", "node_id": {"x": 1}}}',
])
def test_junk_frames_are_dropped_whole(frame):
    assert parse_frame(frame) is None


def test_good_frames_still_parse_after_the_checks():
    assert parse_frame('{"type": "executing", "data": {"prompt_id": "p", "node": 5}}') == Executing("p", "5")
    assert parse_frame('{"type": "progress", "data": {"prompt_id": "p", "node": "3", "value": 2, "max": 4}}') \
        == Progress("p", "3", 2.0, 4.0)
    executed = parse_frame('{"type": "executed", "data": {"prompt_id": "p", "node": "9", "output": {"images": []}}}')
    assert executed == Executed("p", "9", {"images": []})


@pytest.mark.parametrize("url, refused", [
    ("http://127.0.0.1:9/x", True), ("http://198.18.0.1/x", True), ("http://192.0.2.1/x", True),
    ("http://169.254.169.254/latest/meta-data", True), ("http://[::1]:80/x", True), ("http://[fe80::1]/x", True),
    ("http://[::ffff:127.0.0.1]/x", True), ("http://0.0.0.0/x", True), ("http://100.64.0.1/x", True),
    ("https://93.184.215.14/hook", False), ("https://[2606:4700::6810:84e5]/hook", False),
    ("https://hooks.example.com/x", False),  # a name: judged by what it resolves to, on delivery
])
def test_webhook_targets_given_as_addresses_are_judged_at_once(url, refused):
    assert (literal_target_problem(url) is not None) is refused


@pytest.mark.parametrize("address, public", [("8.8.8.8", True), ("127.0.0.1", False), ("::1", False),
                                             ("::ffff:169.254.1.1", False), ("fe80::1%eth0", False),
                                             ("nope", False)])
def test_public_addresses(address, public):
    assert address_is_public(address) is public


def test_a_stored_output_never_resolves_outside_its_task(tmp_path):
    from comfyart.files.inputs import InputStore
    from comfyart.files.outputs import OutputStore

    store = OutputStore(tmp_path / "outputs")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (store.task_dir("T1") / "link.png").symlink_to(secret)  # planted by anything but comfyart
    (store.task_dir("T1") / "ok.png").write_bytes(b"png")
    assert store.find("T1", "ok.png") == (store.root / "T1" / "ok.png")
    for name in ("link.png", "../../secret.txt", "..", "/etc/passwd", "a/../ok.png", ""):
        assert store.find("T1", name) is None, name
    assert store.destination("T1", "../../../x.png", "9").parent == store.root / "T1"
    assert store.destination("T1", "ok.png", "../../9").parent == store.root / "T1"  # node ids from backends too
    inputs = InputStore(tmp_path / "inputs")
    for name in ("../secret.txt", "/etc/passwd", "ab", "x" * 64 + ".png"):
        assert inputs.path(name) is None


def test_an_expiry_too_long_to_be_a_time_is_refused_not_parsed():
    assert not signature_valid(b"s", "/p", "9" * 5000, "x", now=0)  # int() of it would raise
