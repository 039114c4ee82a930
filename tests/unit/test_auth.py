"""Who may do what (auth): the credentials a request presents, key shapes, who sees which task, signed URLs, and when
the daemon refuses to start."""
from __future__ import annotations

import base64
import json

import pytest

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
from comfyart.config.sections import AuthConfig
from comfyart.models import socket_key

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


def test_configured_keys_are_held_by_hash_under_a_stable_owner_id():
    auth = AuthConfig(keys=[{"name": "ops", "role": "admin", "key": "k" * 24},
                            {"name": "ci", "key_sha256": hash_key("c" * 24), "max_queued": 3}])
    ops, ci = config_keys(auth)
    assert ops.id == "config:ops" and ops.role is Role.ADMIN and ops.sha256 == hash_key("k" * 24)
    assert ci.sha256 == hash_key("c" * 24) and ci.principal().max_queued == 3 and ci.role is Role.CLIENT


def test_an_expiry_too_long_to_be_a_time_is_refused_not_parsed():
    assert not signature_valid(b"s", "/p", "9" * 5000, "x", now=0)  # int() of it would raise
