"""The replicas' records as Redis holds them: a record survives its own hash, and a lease, an election or a record
this version cannot read is taken as absent instead of failing every reader."""
from __future__ import annotations

import pytest

from comfyart.store.replicas import LeaderRecord, ReplicaRecord, fleet_digest, parse_election

RECORD = ReplicaRecord(name="host:8100", url="http://host:8100", version="0.1.0", started_ms=10, heartbeat_ms=20,
                       role="leader", pid=7, fleet={"pool": "aa", "docker": "bb"})


def test_a_record_reads_back_from_its_hash():
    fields = RECORD.fields()
    assert all(isinstance(value, str) for value in fields.values())
    assert ReplicaRecord.parse(fields) == RECORD


@pytest.mark.parametrize("change", [{"pid": "x"}, {"heartbeat_ms": ""}, {"fleet": "[1]"}, {"fleet": "{"}])
def test_an_unreadable_record_is_none(change):
    assert ReplicaRecord.parse({**RECORD.fields(), **change}) is None


def test_a_record_missing_a_field_is_none():
    fields = RECORD.fields()
    del fields["url"]
    assert ReplicaRecord.parse(fields) is None


def test_the_fingerprint_ignores_the_order_of_sections_and_sees_any_change():
    assert RECORD.fingerprint == fleet_digest({"docker": "bb", "pool": "aa"})
    assert RECORD.fingerprint != fleet_digest({"docker": "bb", "pool": "ab"})
    assert RECORD.describe()["fingerprint"] == RECORD.fingerprint


@pytest.mark.parametrize(("raw", "parsed"), [
    ("r1 5 1700", LeaderRecord("r1", 5, 1700)),
    (b"host:8100 12 99", LeaderRecord("host:8100", 12, 99)),
    (None, None), ("", None), ("r1 5", None), ("r1 five 1700", None), (" 5 1700", None), ("a b c d", None),
])
def test_the_lease_string(raw, parsed):
    assert LeaderRecord.parse(raw) == parsed


@pytest.mark.parametrize(("raw", "parsed"), [
    ('{"epoch": 3, "replica": "r", "since_ms": 1, "reason": "expired"}',
     {"epoch": 3, "replica": "r", "since_ms": 1, "reason": "expired"}),
    ('{"epoch": "3"}', None), ("[3]", None), ("nope", None),
])
def test_an_election(raw, parsed):
    assert parse_election(raw) == parsed
