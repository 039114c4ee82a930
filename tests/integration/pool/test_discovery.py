"""Backends found by DNS, without a daemon: real lookups (dnspython) against the tests' DNS server, applied to a
pool. The addresses are on 127.0.0.0/8 with nothing listening on the port: the backends stay unhealthy, which is
all these tests need (what joins, drains, stays)."""
from __future__ import annotations

import pytest

from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import DnsBackendConfig, PoolConfig
from comfyart.models import BackendMode
from comfyart.pool.backend import AfterDrain
from comfyart.pool.discovery import DnsBackends, LookupFailed, dns_lookup
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool
from tests.support.dns import dns_server
from tests.support.ports import free_port

NAME = "comfyui.gpu.svc.cluster.local"


def entry(server, **changes) -> DnsBackendConfig:
    return DnsBackendConfig(name=NAME, port=free_port(), nameserver=server.nameserver, timeout_s=0.5, **changes)


def dns_ids(pool: Pool) -> dict[str, str]:
    """The pool's DNS backends: id -> mode (and what after a drain)."""
    return {b.id: b.mode.value + (f"/{b.after_drain.value}" if b.after_drain else "")
            for b in pool.backends.values() if b.source == "dns"}


@pytest.fixture
def pool(session) -> Pool:
    made = Pool(config=PoolConfig(min_containers=0), providers=[],
                connect=lambda url: ComfyClient(session, url, timeout_s=0.5))
    made.ready.set()
    return made


async def test_a_lookup_gives_a_and_aaaa_addresses_and_an_unknown_name_none():
    async with dns_server(NAME, ["127.0.0.2", "127.0.0.3", "::1"]) as server:
        config = entry(server)
        lookup = dns_lookup([config])
        assert await lookup(config) == frozenset({"127.0.0.2", "127.0.0.3", "::1"})
        other = config.model_copy(update={"name": "nothing.gpu.svc.cluster.local"})
        assert await lookup(other) == frozenset()  # NXDOMAIN: an empty answer, not a failure
        server.addresses.clear()
        assert await lookup(config) == frozenset()


@pytest.mark.parametrize("mode", ["silent", "servfail"])
async def test_a_lookup_that_times_out_or_fails_is_a_failure_not_an_empty_answer(mode):
    async with dns_server(NAME, ["127.0.0.2"]) as server:
        config = entry(server)
        server.mode = mode
        with pytest.raises(LookupFailed, match=NAME):
            await dns_lookup([config])(config)


async def test_addresses_join_leave_through_a_drain_and_come_back(pool):
    async with dns_server(NAME, ["127.0.0.2", "127.0.0.3"]) as server:
        config = entry(server)
        found = DnsBackends([config], pool, HealthChecks(pool, pool.config))
        name = found.names[0]
        await found.first_look()
        two, three = f"dns:{NAME}:127.0.0.2", f"dns:{NAME}:127.0.0.3"
        assert dns_ids(pool) == {two: "active", three: "active"}
        assert pool.backends[two].url == f"http://127.0.0.2:{config.port}"
        server.addresses[:] = ["127.0.0.3", "127.0.0.4"]
        await name.refresh()
        four = f"dns:{NAME}:127.0.0.4"
        assert dns_ids(pool) == {two: "draining/remove", three: "active", four: "active"}
        server.addresses.append("127.0.0.2")  # back before its drain ended: it takes work again
        await name.refresh()
        assert dns_ids(pool) == {two: "active", three: "active", four: "active"}


async def test_a_failed_lookup_keeps_every_backend_and_an_admins_drain_is_left_alone(pool):
    async with dns_server(NAME, ["127.0.0.2", "127.0.0.3"]) as server:
        found = DnsBackends([entry(server)], pool, HealthChecks(pool, pool.config))
        name = found.names[0]
        await name.refresh()
        held = pool.backends[f"dns:{NAME}:127.0.0.3"]
        held.drain(AfterDrain.HOLD, "by hand")
        for mode in ("silent", "servfail"):
            server.mode = mode
            await name.refresh()
            assert len(dns_ids(pool)) == 2 and name.failing_since is not None
        server.mode = "answer"
        await name.refresh()
        assert name.failing_since is None
        assert held.mode == BackendMode.DRAINING and held.after_drain == AfterDrain.HOLD
        assert pool.backends[f"dns:{NAME}:127.0.0.2"].mode == BackendMode.ACTIVE


async def test_an_empty_answer_drains_only_once_it_has_lasted_the_grace(pool):
    async with dns_server(NAME, ["127.0.0.2"]) as server:
        found = DnsBackends([entry(server, empty_grace_s=0.3)], pool, HealthChecks(pool, pool.config))
        name = found.names[0]
        await name.refresh()
        server.addresses.clear()
        await name.refresh()
        assert dns_ids(pool) == {f"dns:{NAME}:127.0.0.2": "active"}  # a blip, for now
        server.addresses.append("127.0.0.2")
        await name.refresh()  # the streak ends: the next empty answer starts a new one
        server.addresses.clear()
        await name.refresh()
        assert dns_ids(pool) == {f"dns:{NAME}:127.0.0.2": "active"}
        server.mode = "silent"
        await name.refresh()  # a failed lookup (0.5 s: the grace passes meanwhile) neither ends nor restarts it
        assert dns_ids(pool) == {f"dns:{NAME}:127.0.0.2": "active"}
        server.mode = "answer"
        await name.refresh()
        assert dns_ids(pool) == {f"dns:{NAME}:127.0.0.2": "draining/remove"}


async def test_a_failed_first_look_falls_back_to_the_last_answer(pool):
    """A new term: the pool was emptied; the lookup fails; this process's last answer brings the backends back
    before the pool is ready, so the recovery finds the backends its prompts run on."""
    async with dns_server(NAME, ["127.0.0.2"]) as server:
        found = DnsBackends([entry(server)], pool, HealthChecks(pool, pool.config))
        await found.first_look()
        pool.reset()
        server.mode = "silent"
        await found.first_look()
        assert dns_ids(pool) == {f"dns:{NAME}:127.0.0.2": "active"}
