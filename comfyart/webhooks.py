"""Webhook deliveries: when a task that carries a ``webhook`` URL ends (completed, failed or canceled), its
record is POSTed there, signed, and retried with backoff until a 2xx answer or ``max_attempts``.

The task's move to a final status schedules the delivery in Redis in the same script (``P:webhooks``), so a
restart resumes it. Every attempt is recorded in the task's ``webhook_deliveries``. Delivery is at least once: a
receiver should use ``X-Comfyart-Delivery`` (the task id) to ignore repeats.

Headers: ``X-Comfyart-Event`` (``task.completed``, ``task.failed``, ``task.canceled``), ``X-Comfyart-Delivery``,
and with ``webhooks.secret`` set, ``X-Comfyart-Signature: sha256=<hex HMAC-SHA256 of the body>``.

A webhook is a request the daemon makes for a caller, from inside the network: a client key's webhook
(``public_only``) may reach public addresses only, unless ``webhooks.allow_private_targets``. Its host name is
resolved by a resolver that refuses private, loopback and link-local answers, on the connection actually used, so
a name that changes its answer between two lookups gains nothing; redirects are never followed.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from loguru import logger

from comfyart.bus import EventHub
from comfyart.clock import now_ms
from comfyart.config.sections import WebhooksConfig
from comfyart.errors import NotFound, TransientError
from comfyart.models import FINAL_STATUSES, Task
from comfyart.policy.rates import webhook_next_attempt
from comfyart.store.deliveries import Deliveries
from comfyart.store.tasks import TaskStore

POLL_S = 1.0
PRIVATE_TARGET = "the webhook's host is not a public address; client keys may reach public addresses only"


def address_is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback, link-local, reserved, ...)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


def literal_target_problem(url: str) -> str | None:
    """For a public-only webhook: PRIVATE_TARGET when its host is an IP address that is not public (a name is
    judged by what it resolves to, when delivered)."""
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return None if address_is_public(host) else PRIVATE_TARGET


class PrivateTarget(OSError):
    pass


class PublicOnlyResolver(aiohttp.abc.AbstractResolver):
    """Resolves like aiohttp's default, and refuses a name with any answer that is not a public address."""

    def __init__(self) -> None:
        self.inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[aiohttp.abc.ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if not answers or not all(address_is_public(a["host"]) for a in answers):
            raise PrivateTarget(PRIVATE_TARGET)
        return answers

    async def close(self) -> None:
        await self.inner.close()
BATCH = 32
USER_AGENT = "comfyart-webhook"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


OutputURL = Callable[[Task, str], str]  # the URL of a task's output file, given its name


def payload(task: Task, output_url: OutputURL) -> bytes:
    """The task record as delivered: its graph and owner left out, each output with a URL that downloads it
    (signed: the receiver has no key)."""
    record = task.model_dump(mode="json", exclude={"prompt", "webhook_deliveries", "owner"})
    for output in record["outputs"]:
        output.setdefault("url", None)
        if output["url"] is None:
            output["url"] = output_url(task, output["filename"])
    return json.dumps(record, separators=(",", ":")).encode()


class WebhookSender:
    def __init__(self, *, store: TaskStore, deliveries: Deliveries, session: aiohttp.ClientSession,
                 config: WebhooksConfig, output_url: OutputURL, events: EventHub | None = None) -> None:
        self.store = store
        self.session = session
        self.config = config
        self.output_url = output_url
        self.deliveries = deliveries
        self.events = events or store.events
        self.public_session: aiohttp.ClientSession | None = None
        self.counters: dict[str, int] = {"delivered": 0, "failed": 0, "given_up": 0}  # attempts, for /metrics

    async def run(self) -> None:
        # webhooks of client keys go through a session of their own, whose resolver refuses private addresses
        self.public_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicOnlyResolver()))
        try:
            await self._run()
        finally:
            await self.public_session.close()

    async def _run(self) -> None:
        def ended_with_webhook(event: dict[str, Any]) -> bool:
            return event.get("type") == "task" and event.get("webhook_due") is True

        async with asyncio.TaskGroup() as deliveries:
            while True:
                # the events only wake the loop early; Redis says what is due, so a lagged subscription loses nothing
                with self.events.subscribe(ended_with_webhook, capacity=10_000) as ended:
                    while not ended.closed:
                        try:
                            due = await self.deliveries.due(now_ms(), BATCH)
                        except TransientError as exc:
                            logger.warning("webhooks paused error={}", exc)
                            due = []
                        in_flight = [deliveries.create_task(self.deliver(task_id), name=f"webhook {task_id}")
                                     for task_id in due]
                        if in_flight:
                            await asyncio.wait(in_flight)
                        if len(due) < BATCH:
                            await ended.get(POLL_S)  # a task just ended, or time to look for retries

    def _session(self, public_only: bool) -> aiohttp.ClientSession:
        if not public_only:
            return self.session
        if self.public_session is None:
            raise RuntimeError("webhooks of client keys are delivered from the running sender only")
        return self.public_session

    async def deliver(self, task_id: str) -> None:
        try:
            await self._deliver(task_id)
        except TransientError as exc:  # Redis away: the delivery stays due and is tried again
            logger.warning("webhook delivery postponed task={} error={}", task_id, exc)

    async def _deliver(self, task_id: str) -> None:
        try:
            task = await self.store.get(task_id)
        except NotFound:
            await self.deliveries.attempted(task_id, [], None)
            return
        if task.webhook is None or task.status not in FINAL_STATUSES:
            await self.deliveries.attempted(task_id, task.webhook_deliveries, None)
            return
        body = payload(task, self.output_url)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Comfyart-Event": f"task.{task.status.value}", "X-Comfyart-Delivery": task.id}
        if self.config.secret is not None:
            headers["X-Comfyart-Signature"] = signature(self.config.secret.get_secret_value(), body)
        attempt = len(task.webhook_deliveries) + 1
        status: int | None = None
        error: str | None = None
        public_only = task.webhook_public_only and not self.config.allow_private_targets
        refusal = literal_target_problem(task.webhook) if public_only else None
        try:
            if refusal is not None:
                raise ValueError(refusal)
            session = self._session(public_only)
            async with session.post(task.webhook, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if isinstance(getattr(exc, "os_error", None), PrivateTarget):  # aiohttp wraps what the resolver raised
                refusal = PRIVATE_TARGET
            error = refusal or f"{type(exc).__name__}: {exc}".rstrip(": ")
        wait_s = None if refusal is not None else webhook_next_attempt(  # a refusal would only repeat
            attempt=attempt, status=status, max_attempts=self.config.max_attempts, backoff_s=self.config.backoff_s,
            backoff_max_s=self.config.backoff_max_s, rand=random.random())
        delivered = status is not None and 200 <= status < 300
        record: dict[str, Any] = {"attempt": attempt, "at_ms": now_ms(), "status": status, "delivered": delivered}
        if error is not None:
            record["error"] = error
        next_at = None if wait_s is None else now_ms() + int(wait_s * 1000)
        if next_at is not None:
            record["next_attempt_ms"] = next_at
        await self.deliveries.attempted(task.id, [*task.webhook_deliveries, record], next_at)
        self.counters["delivered" if delivered else "failed"] += 1
        if not delivered and next_at is None:
            self.counters["given_up"] += 1
        if delivered:
            logger.info("webhook delivered task={} status={}", task.id, status)
        elif next_at is None:
            logger.warning("webhook given up task={} attempts={} last={}", task.id, attempt, status or error)
        else:
            logger.info("webhook failed, retrying task={} attempt={} in_s={} last={}", task.id, attempt, wait_s,
                        status or error)
