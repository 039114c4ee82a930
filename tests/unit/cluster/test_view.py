"""What an operator is shown of the replicas: the fleet fingerprint (stable, and different where the fleet
differs), ``/api/cluster``'s answer, and ``/readyz``'s verdict for every combination."""
from __future__ import annotations

import dataclasses
import itertools
import socket

import pytest

from comfyart.cluster.replicas import ReplicaIdentity, replica_name, replica_url, settings_fingerprint
from comfyart.cluster.view import FLEET_SECTIONS, describe_cluster, differing_sections, iso, unready_reason
from comfyart.config.settings import Settings
from comfyart.store.replicas import LeaderRecord, ReplicaRecord

STATICS = [{"name": "a", "url": "http://a:8188"}]


def test_the_fingerprint_is_stable_and_names_every_fleet_section():
    first = settings_fingerprint(Settings(static_backends=STATICS))
    assert set(first) == set(FLEET_SECTIONS)
    assert first == settings_fingerprint(Settings(static_backends=STATICS))


def test_settings_outside_the_fleet_or_equal_to_their_defaults_change_nothing():
    plain = settings_fingerprint(Settings())
    assert settings_fingerprint(Settings(server={"port": 9000}, cluster={"name": "other"},
                                         data_dir="/elsewhere")) == plain
    assert settings_fingerprint(Settings(instance="main", pool={"min_containers": 1})) == plain


@pytest.mark.parametrize(("changed", "section"), [
    ({"static_backends": STATICS}, "static_backends"), ({"instance": "blue"}, "instance"),
    ({"pool": {"max_containers": 9}}, "pool"), ({"processes": {"command": ["python", "main.py"]}}, "processes"),
])
def test_a_fleet_section_that_differs_is_named(changed, section):
    assert differing_sections(settings_fingerprint(Settings()), settings_fingerprint(Settings(**changed))) == [section]


def test_a_section_one_side_lacks_differs():
    assert differing_sections({"pool": "a"}, {"pool": "a", "docker": "b"}) == ["docker"]


def test_the_name_and_address_of_a_replica():
    host = socket.gethostname()
    assert replica_name(Settings(server={"port": 8123})) == f"{host}:8123"
    assert replica_name(Settings(cluster={"name": "blue-1"})) == "blue-1"
    assert replica_url(Settings(server={"host": "127.0.0.5", "port": 8100})) == "http://127.0.0.5:8100"
    assert replica_url(Settings(server={"host": "0.0.0.0", "port": 8100})) == f"http://{host}:8100"
    assert replica_url(Settings(server={"host": "::1", "port": 8100})) == "http://[::1]:8100"
    # a proxy's address answers from any replica: never the one the others reach this one at
    behind_a_proxy = {"public_url": "https://art.example/", "host": "127.0.0.2", "port": 8100}
    assert replica_url(Settings(server=behind_a_proxy)) == "http://127.0.0.2:8100"
    assert replica_url(Settings(server=behind_a_proxy, cluster={"advertise_url": "http://gpu-a:8100/"})) == \
        "http://gpu-a:8100"


def test_the_identity_makes_the_record_of_each_heartbeat():
    identity = ReplicaIdentity.of(Settings(cluster={"name": "r1"}))
    record = identity.record(123, leading=True)
    assert (record.name, record.heartbeat_ms, record.role, record.fleet) == ("r1", 123, "leader", identity.fleet)
    assert identity.record(124, leading=False).role == "standby"


def replica(name: str, **fleet: str) -> ReplicaRecord:
    return ReplicaRecord(name, f"http://{name}", "0.1.0", 1, 9_000, "standby", 1, fleet or {"pool": "same"})


def test_the_cluster_marks_the_leader_and_the_replicas_configured_otherwise():
    leader = LeaderRecord("r1", 4, 1_700_000_000_000)
    elections = [{"epoch": 4, "replica": "r1", "since_ms": 1_700_000_000_000, "reason": "expired"}, {"epoch": 3}]
    view = describe_cluster("r2", leader, [replica("r1"), replica("r2"), replica("r3", pool="other")], elections,
                            now_ms=10_000)
    assert view["replica"] == "r2" and view["now_ms"] == 10_000
    assert view["leader"] == {"name": "r1", "epoch": 4, "since_ms": 1_700_000_000_000,
                              "since": "2023-11-14T22:13:20.000Z"}
    assert [(r["name"], r["leader"], r["config_differs"], r["differing_sections"]) for r in view["replicas"]] == [
        ("r1", True, False, []), ("r2", False, False, []), ("r3", False, True, ["pool"])]
    assert view["elections"][0]["since"] == iso(1_700_000_000_000) and view["elections"][1] == {"epoch": 3}


def test_without_a_leader_replicas_are_compared_with_the_one_answering():
    view = describe_cluster("r3", None, [replica("r1"), replica("r3", pool="other")], [], now_ms=1)
    assert view["leader"] is None
    assert [r["config_differs"] for r in view["replicas"]] == [True, False]
    assert describe_cluster("r9", None, [replica("r1")], [], now_ms=1)["replicas"][0]["config_differs"] is False


@pytest.mark.parametrize(("redis_answers", "joined", "pool_ready", "stopping", "events_connected"),
                         list(itertools.product([True, False], repeat=5)))
def test_ready_only_when_everything_holds(redis_answers, joined, pool_ready, stopping, events_connected):
    reason = unready_reason(redis_answers=redis_answers, joined=joined, pool_ready=pool_ready, stopping=stopping,
                            events_connected=events_connected)
    if redis_answers and joined and pool_ready and not stopping and events_connected:
        assert reason is None
    elif stopping:
        assert reason == "stopping"
    elif not redis_answers:
        assert reason == "redis unreachable"
    elif not joined:
        assert reason is not None and reason.startswith("not joined")
    elif not events_connected:
        assert reason is not None and reason.startswith("event bridge not connected")
    else:
        assert reason is not None and reason.startswith("pool not ready")


def test_a_live_replica_of_the_same_name_elsewhere_refuses_the_start_its_own_predecessor_does_not():
    from comfyart.cluster.replicas import name_clash

    me = ReplicaIdentity("gpu:8100", "http://gpu-a:8100", "0.1.0", 5, 42)
    assert name_clash(me, []) is None
    assert name_clash(me, [replica("other")]) is None
    predecessor = dataclasses.replace(replica("gpu:8100"), url="http://gpu-a:8100")  # killed; we hold its port
    assert name_clash(me, [predecessor]) is None
    twin = dataclasses.replace(replica("gpu:8100"), url="http://gpu-b:8100")
    assert name_clash(me, [replica("other"), twin]) == (
        "another live replica is named gpu:8100 (at http://gpu-b:8100, pid 1): give each replica its own "
        "cluster.name (or leave it out: HOST:PORT)")
