"""Backends found by DNS (``dns_backends``): the leader looks each name up every ``interval_s`` and keeps one
backend per address, run by someone else as a static backend is (kind ``static``, source ``dns``): new addresses
join (probed at once, so they take work within the interval), addresses gone drain through the pool's own
drain (``AfterDrain.REMOVE``: a busy backend finishes its prompts, then the reconciler forgets it), and an
address back while draining takes work again. ``policy.discovery`` decides; this module looks up and applies.

One loop per name, for a leader's term (``run``, started afresh at each). The names are looked up once more
before the pool is ready (``first_look``, from the reconciler's start): the tracker's recovery then finds the
backends its prompts run on, instead of requeueing them (a prompt would run twice). A lookup that fails then
falls back to this process's last answer. A failure streak is logged once, at its start, and once when it ends.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver
from loguru import logger

from comfyart.config.fleet import DnsBackendConfig
from comfyart.errors import ConfigError
from comfyart.models import BackendMode, BackendState
from comfyart.policy.discovery import address_of, addresses, backend_id, backend_url, believed, plan
from comfyart.pool.backend import AfterDrain, Backend
from comfyart.pool.health import HealthChecks
from comfyart.pool.registry import Pool

SOURCE = "dns"


class LookupFailed(Exception):
    """The name could not be looked up (not an empty answer): its backends are kept."""


# the addresses a name resolves to now (empty: NXDOMAIN or no record); LookupFailed when it could not be looked up
Lookup = Callable[[DnsBackendConfig], Awaitable[frozenset[str]]]


def dns_lookup(configs: Sequence[DnsBackendConfig]) -> Lookup:
    """A lookup through dnspython's asyncio resolver: the entry's nameserver, or the system's (read once, here).
    A and AAAA records, asked at once; no search domains (a Kubernetes name is written whole); no cache."""
    resolvers: dict[tuple[str, int] | None, dns.asyncresolver.Resolver] = {}
    for config in configs:
        server = config.nameserver_address()
        if server not in resolvers:
            try:
                resolver = dns.asyncresolver.Resolver(configure=server is None)
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError("dns_backends: no nameserver in /etc/resolv.conf; "
                                  "set dns_backends[].nameserver") from None
            if server is not None:
                resolver.nameservers, resolver.port = [server[0]], server[1]
            resolvers[server] = resolver

    async def one_type(config: DnsBackendConfig, rdtype: str) -> list[str]:
        resolver = resolvers[config.nameserver_address()]
        try:
            answer = await resolver.resolve(config.name, rdtype, raise_on_no_answer=False, search=False,
                                            lifetime=config.timeout_s)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL from every nameserver, a bad answer
            raise LookupFailed(f"{rdtype} {config.name}: {exc}") from None
        except OSError as exc:  # no route to the nameserver
            raise LookupFailed(f"{rdtype} {config.name}: {exc.strerror or exc}") from None
        return [] if answer.rrset is None else [record.to_text() for record in answer.rrset]

    async def lookup(config: DnsBackendConfig) -> frozenset[str]:
        try:
            async with asyncio.TaskGroup() as both:  # one failed: the other is cancelled, not left behind
                ipv4, ipv6 = both.create_task(one_type(config, "A")), both.create_task(one_type(config, "AAAA"))
        except* LookupFailed as failed:
            raise failed.exceptions[0] from None
        return addresses([*ipv4.result(), *ipv6.result()])

    return lookup


class DnsName:
    """One ``dns_backends`` entry: its backends in the pool, its last answer, its failure and empty streaks."""

    def __init__(self, config: DnsBackendConfig, pool: Pool, health: HealthChecks, lookup: Lookup) -> None:
        self.config = config
        self.pool = pool
        self.health = health
        self.lookup = lookup
        self.last_answer: frozenset[str] | None = None  # this process's last good lookup, across terms
        self.failing_since: float | None = None  # monotonic: the current failure streak's start
        self.empty_since: float | None = None  # monotonic: the current empty-answer streak's start

    async def run(self) -> None:
        """Look up and apply every ``interval_s``, until cancelled (the term ends)."""
        await self.pool.ready.wait()
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.interval_s)

    async def refresh(self, *, fall_back: bool = False) -> None:
        """One lookup, applied; ``fall_back``: a failed lookup acts on the last answer instead (``first_look``)."""
        answer = await self._look()
        if answer is None and fall_back:
            answer = self.last_answer
        now = time.monotonic()
        if answer is not None:  # a failed lookup neither starts nor ends an empty streak
            self.empty_since = None if answer else self.empty_since if self.empty_since is not None else now
        acted_on = believed(answer, empty_for_s=0.0 if self.empty_since is None else now - self.empty_since,
                            grace_s=self.config.empty_grace_s)
        await self.apply(acted_on)

    async def _look(self) -> frozenset[str] | None:
        name = self.config.name
        try:
            answer = await self.lookup(self.config)
        except LookupFailed as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                logger.warning("dns lookup failed name={} error={}; its backends are kept", name, exc)
            return None
        if self.failing_since is not None:
            logger.info("dns lookup answers again name={} after={:.0f}s", name,
                        time.monotonic() - self.failing_since)
            self.failing_since = None
        if not answer and self.last_answer:
            logger.warning("dns name resolves to no address name={}; its backends drain after {:g}s of this",
                           name, self.config.empty_grace_s)
        self.last_answer = answer
        return answer

    def members(self) -> dict[str, Backend]:
        found = {}
        for backend in self.pool.backends.values():
            if backend.source == SOURCE and (address := address_of(self.config.name, backend.id)) is not None:
                found[address] = backend
        return found

    async def apply(self, answer: frozenset[str] | None) -> None:
        members = self.members()
        decided = plan({address: _leaving(b) for address, b in members.items()}, answer)
        if not decided.changes:
            return
        name = self.config.name
        for address in decided.drain:
            members[address].drain(AfterDrain.REMOVE, f"{address} left {name} in DNS")
        for address in decided.rejoin:
            logger.info("dns backend back backend={}", members[address].id)
            members[address].activate()
        joined = [self._add(address) for address in decided.add]
        self.pool.notify()  # the reconciler forgets the drained idle ones, the dispatcher sees the new ones
        await asyncio.gather(*(self.health.probe(backend) for backend in joined))

    def _add(self, address: str) -> Backend:
        config = self.config
        url = backend_url(config.scheme, address, config.port, config.path or "")
        backend = Backend(backend_id(config.name, address), "static", address, url, self.pool.connect(url),
                          port=config.port, name=f"{config.name} {address}", state=BackendState.UNHEALTHY,
                          source=SOURCE, tags=frozenset(config.tags), weight=config.weight)
        logger.info("dns backend joins backend={} url={}", backend.id, url)
        self.pool.backends[backend.id] = backend
        return backend


def _leaving(backend: Backend) -> bool:
    """Draining because its address had gone (an admin's drain, HOLD, is the admin's to end)."""
    return backend.mode == BackendMode.DRAINING and backend.after_drain == AfterDrain.REMOVE


class DnsBackends:
    """Every ``dns_backends`` entry: ``run`` is the leader's loop, ``first_look`` the reconciler's start's."""

    def __init__(self, configs: Sequence[DnsBackendConfig], pool: Pool, health: HealthChecks,
                 lookup: Lookup | None = None) -> None:
        lookup = lookup or dns_lookup(configs)
        self.names = [DnsName(config, pool, health, lookup) for config in configs]

    async def first_look(self) -> None:
        """Each name once, before the pool is ready; a failed lookup falls back to the last answer (none in a
        fresh process: the names' backends join at the loop's first lookup). A term starts with no streak."""
        for name in self.names:
            name.failing_since = name.empty_since = None
        await asyncio.gather(*(name.refresh(fall_back=True) for name in self.names))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as names:
            for name in self.names:
                names.create_task(name.run(), name=f"dns {name.config.name}")
