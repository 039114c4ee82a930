"""``GET /metrics`` in Prometheus's text format (prometheus_client, one registry per daemon: no module globals).

Two kinds of figures:
* read when scraped: tasks by status and queue depth (Redis), the queue by priority (a Redis script over the head
  of the queue, ``PRIORITY_SCAN`` entries at most), and each backend's state, in-flight prompts and VRAM, plus the
  counters the pool, dispatcher, attempts and webhooks keep, and the cluster: live replicas, whether this replica
  holds the lease, the fencing epoch and the elections seen (``cluster.replicas.Replica.figures``);
* for an autoscaler outside comfyart (issue 25: KEDA or an HPA scaling a Kubernetes Deployment of ComfyUI pods):
  ``comfyart_autoscaler_wanted_backends``, the count of the autoscaler's last decision (``Pool.describe_decision``:
  with a Docker or process provider, the containers it wants; with none, the backends the load wants,
  ``policy.autoscale.wanted_backends``), and ``comfyart_queue_depth_by_tags``, the unfinished tasks by the tags they
  require and where they are (``store.depth``). Every replica serves both: the decision is a standby's from the
  pool mirror (the leader publishes it with its pool), the depth is read from Redis at the scrape;
* followed from the task events as they happen (``Metrics.run``): tasks finished by status, how long tasks waited
  for a backend and how long they ran (histograms).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ulid
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from comfyart.bus import EventHub
from comfyart.cluster.replicas import ClusterFigures
from comfyart.models import FINAL_STATUSES, TaskStatus
from comfyart.pool.registry import Pool
from comfyart.store.depth import DepthByTags, TagDepth
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore

PRIORITY_SCAN = 100_000  # queued entries the priority breakdown reads; the rest are counted as "beyond_scan"
TAGS_SCAN = 100_000  # queued entries whose tags are read; the rest are counted apart
# seconds: a task waits from milliseconds (an idle pool) to hours (a long queue), and runs as long
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))


@dataclass
class Snapshot:
    """What a scrape reads before the registry renders it (the collector itself cannot await)."""

    tasks_by_status: dict[str, int] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)
    queued_by_priority: dict[str, int] = field(default_factory=dict)
    backends: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    cluster: ClusterFigures | None = None
    by_tags: DepthByTags | None = None
    decision: dict[str, Any] | None = None  # the autoscaler's last (``Pool.describe_decision``)


class _ReadAtScrape(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Any]:
        snap = self.snapshot
        tasks = GaugeMetricFamily("comfyart_tasks", "Task records by status", labels=["status"])
        for status, count in snap.tasks_by_status.items():
            tasks.add_metric([status], count)
        yield tasks
        depth = GaugeMetricFamily("comfyart_queue_depth", "Unfinished tasks by where they are: queued (waiting for a "
                                  "backend), submitted (on a backend, not started), running", labels=["state"])
        for state, count in snap.depth.items():
            depth.add_metric([state], count)
        yield depth
        by_priority = GaugeMetricFamily("comfyart_queued_by_priority", "Queued tasks by priority (the head of the "
                                        f"queue, {PRIORITY_SCAN} at most; the rest as beyond_scan)",
                                        labels=["priority"])
        for priority, count in snap.queued_by_priority.items():
            by_priority.add_metric([priority], count)
        yield by_priority
        states = GaugeMetricFamily("comfyart_backends", "Backends by health and mode", labels=["status", "mode"])
        grouped: dict[tuple[str, str], int] = {}
        for backend in snap.backends:
            key = (backend["status"], backend["mode"])
            grouped[key] = grouped.get(key, 0) + 1
        for (status, mode), count in sorted(grouped.items()):
            states.add_metric([status, mode], count)
        yield states
        labels = ["backend", "kind", "host", "gpu"]
        up = GaugeMetricFamily("comfyart_backend_up", "1 when the backend is healthy", labels=labels)
        inflight = GaugeMetricFamily("comfyart_backend_inflight", "Prompts on the backend", labels=labels)
        done = CounterMetricFamily("comfyart_backend_tasks_done", "Tasks the backend finished", labels=labels)
        vram_total = GaugeMetricFamily("comfyart_backend_vram_total_bytes", "The backend's VRAM", labels=labels)
        vram_free = GaugeMetricFamily("comfyart_backend_vram_free_bytes", "The backend's free VRAM", labels=labels)
        for backend in snap.backends:
            values = [backend["id"], backend["kind"], str(backend.get("host") or ""),
                      "" if backend.get("gpu") is None else str(backend["gpu"])]
            up.add_metric(values, 1 if backend["status"] == "healthy" else 0)
            inflight.add_metric(values, backend["inflight"])
            done.add_metric(values, backend["tasks_done"])
            if backend.get("vram_total") is not None:
                vram_total.add_metric(values, backend["vram_total"])
            if backend.get("vram_free") is not None:
                vram_free.add_metric(values, backend["vram_free"])
        yield from (up, inflight, done, vram_total, vram_free)
        help_texts = {"pool": "Pool events: containers started, stopped, recycled, lost",
                      "dispatch": "Dispatch counters: prompts submitted, and whether the backend had the models",
                      "attempts": "Attempts that ended without a result, by how, and retries",
                      "webhooks": "Webhook delivery attempts: delivered, failed, given up",
                      "inventories": "Backends' inventories (/object_info): read, new documents parsed, changed, "
                                     "failed reads"}
        for source, counts in snap.counters.items():
            family = CounterMetricFamily(f"comfyart_{source}_events", help_texts[source], labels=["event"])
            for event, count in sorted(counts.items()):
                family.add_metric([event], count)
            yield family
        if snap.cluster is not None:
            yield from cluster_families(snap.cluster)
        yield from scaling_families(snap.decision, snap.by_tags)


def scaling_families(decision: dict[str, Any] | None, by_tags: DepthByTags | None) -> Iterable[Any]:
    """What an autoscaler outside comfyart scales by (see the module docstring). No wanted count before the
    autoscaler's first decision (a scaler keeps its replicas while the metric is absent)."""
    wanted = GaugeMetricFamily("comfyart_autoscaler_wanted_backends", "Backends comfyart's autoscaler wants: with a "
                               "Docker or process provider, its containers; with none, the backends the load wants "
                               "(one per pool.tasks_per_container tasks, queued or running, within min/max)")
    if decision is not None:
        wanted.add_metric([], decision["desired"])
    yield wanted
    if by_tags is None:
        return
    depth = GaugeMetricFamily("comfyart_queue_depth_by_tags", "Unfinished tasks by the tags they require (sorted, "
                              "comma-separated; '-': none) and where they are: queued, submitted, running (the "
                              f"queue's head, {TAGS_SCAN} at most)", labels=["tags", "state"])
    for (tags, state), count in sorted(by_tags.counts.items()):
        depth.add_metric([tags, state], count)
    yield depth
    beyond = GaugeMetricFamily("comfyart_queue_depth_by_tags_unscanned", "Queued tasks beyond the head of the "
                               "queue whose tags were not read")
    beyond.add_metric([], by_tags.beyond_scan)
    yield beyond


def cluster_families(figures: ClusterFigures) -> Iterable[Any]:
    """The replicas' figures. Every replica reports the same cluster-wide values but ``comfyart_cluster_leader``:
    aggregate them with max(), not sum()."""
    for name, help_text, value in (
            ("comfyart_cluster_replicas", "Replicas whose heartbeat is alive", figures.replicas),
            ("comfyart_cluster_leader", "1 on the replica that holds the leader's lease", int(figures.leader)),
            ("comfyart_cluster_epoch", "The fencing epoch: raised by every election", figures.epoch)):
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], value)
        yield gauge
    elections = CounterMetricFamily("comfyart_cluster_elections", "Elections of a leader seen in the history since "
                                    "this replica started")
    elections.add_metric([], figures.elections)
    yield elections


class Metrics:
    def __init__(self, *, store: TaskStore, queue: TaskQueue, pool: Pool,
                 counters: Mapping[str, Mapping[str, int]],
                 cluster: Callable[[], Awaitable[ClusterFigures]] | None = None) -> None:
        """``counters``: the live counters of the pool, the dispatcher, the attempts and the webhooks, by name;
        ``cluster``: reads the replicas' figures at each scrape (None: no cluster figures)."""
        self.store = store
        self.cluster = cluster
        self.queue = queue
        self.pool = pool
        self.counters = counters
        self.tag_depth = TagDepth(queue)
        self.registry = CollectorRegistry()
        self._read = _ReadAtScrape()
        self.registry.register(self._read)
        self.finished = Counter("comfyart_tasks_finished", "Tasks that reached a final status", ["status"],
                                registry=self.registry)
        self.waited = Histogram("comfyart_task_wait_seconds", "From queued to running on a backend",
                                buckets=WAIT_BUCKETS, registry=self.registry)
        self.ran = Histogram("comfyart_task_run_seconds", "From running to completed", buckets=RUN_BUCKETS,
                             registry=self.registry)
        self._started: dict[str, int] = {}  # running tasks' start times, for the run histogram

    async def render(self) -> bytes:
        depth = await self.queue.depth()  # one census gives the unfinished: pending is queued or submitted
        statuses = {TaskStatus.PENDING.value: depth["queued"] + depth["submitted"],
                    TaskStatus.RUNNING.value: depth["running"]}
        for status in FINAL_STATUSES:
            statuses[status.value] = await self.store.count(status)
        self._read.snapshot = Snapshot(
            tasks_by_status=statuses, depth=depth, queued_by_priority=await self.queue.by_priority(PRIORITY_SCAN),
            backends=[b.describe() for b in self.pool.backends.values()],
            counters={name: dict(values) for name, values in self.counters.items()},
            cluster=await self.cluster() if self.cluster is not None else None,
            by_tags=await self.tag_depth.read(TAGS_SCAN), decision=self.pool.describe_decision())
        return generate_latest(self.registry)

    def observe(self, event: dict[str, Any]) -> None:
        """One task event: a start records the wait since it was queued, an end its status and how long it ran."""
        if event.get("type") != "task" or event.get("status") == event.get("previous"):
            return
        task_id, status = event["id"], event["status"]
        if status == TaskStatus.RUNNING:
            started = event.get("started_ms")
            if started:
                self._started[task_id] = started
                created = _created_ms(task_id)
                if created is not None:
                    self.waited.observe(max(0.0, (started - created) / 1000))
        elif status in FINAL_STATUSES:
            self.finished.labels(status).inc()
            started = self._started.pop(task_id, None)
            if status == TaskStatus.COMPLETED and started and event.get("finished_ms"):
                self.ran.observe(max(0.0, (event["finished_ms"] - started) / 1000))
        else:
            self._started.pop(task_id, None)  # back in the queue for a retry: its run starts again

    async def run(self, events: EventHub) -> None:
        """Follow the task events until cancelled (a lagged subscription subscribes again)."""
        while True:
            with events.subscribe(lambda e: e.get("type") == "task", capacity=100_000) as subscription:
                async for event in subscription:
                    self.observe(event)


def _created_ms(task_id: str) -> int | None:
    """The creation time a ULID carries."""
    try:
        return int(ulid.from_str(task_id).timestamp().int)
    except (ValueError, TypeError):
        return None
