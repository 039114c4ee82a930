"""The gauges an autoscaler outside comfyart scales by (metrics.scaling_families), rendered and parsed back with
prometheus_client's own text format."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from comfyart.metrics import scaling_families
from comfyart.store.depth import NO_TAGS, DepthByTags


class _Families(Collector):
    def __init__(self, families: Iterable[Any]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Any]:
        return self.families


def rendered(decision: dict[str, Any] | None, by_tags: DepthByTags | None) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(_Families(scaling_families(decision, by_tags)))
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_wanted_count_is_the_decisions_and_the_depth_is_by_tags_and_state():
    depth = DepthByTags({(NO_TAGS, "queued"): 4, ("gpu,sdxl", "queued"): 2, ("gpu,sdxl", "running"): 1}, 7)
    samples = rendered({"desired": 3, "reason": "load 7 …"}, depth)
    assert samples == {
        ("comfyart_autoscaler_wanted_backends", ()): 3,
        ("comfyart_queue_depth_by_tags", (("state", "queued"), ("tags", "-"))): 4,
        ("comfyart_queue_depth_by_tags", (("state", "queued"), ("tags", "gpu,sdxl"))): 2,
        ("comfyart_queue_depth_by_tags", (("state", "running"), ("tags", "gpu,sdxl"))): 1,
        ("comfyart_queue_depth_by_tags_unscanned", ()): 7,
    }


def test_zero_wanted_is_exported_and_no_decision_yet_exports_no_value():
    assert rendered({"desired": 0}, DepthByTags({}, 0)) == {("comfyart_autoscaler_wanted_backends", ()): 0,
                                                            ("comfyart_queue_depth_by_tags_unscanned", ()): 0}
    assert rendered(None, None) == {}  # a scaler keeps its replicas while the metric is absent
