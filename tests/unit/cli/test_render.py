"""What the CLI prints of the daemon's records: ComfyUI's node errors as its console shows them, the pool with its
VRAM labelled, listings in aligned columns with each task's prompt, and nothing a backend wrote that could drive the
terminal."""
from __future__ import annotations

import pytest

from comfyart.cli.render import (
    age,
    cluster_lines,
    inventory_line,
    models_table,
    node_error_lines,
    pool_lines,
    printable,
    status_lines,
    task_lines,
    task_table,
    workflow_table,
)

# as a real ComfyUI 0.3.64 answered (shared/comfyui/transcripts/04_validation_errors.json), two errors on one node
NODE_ERRORS = {
    "1": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "width",
                      "extra_info": {"input_name": "width", "received_value": 0}},
                     {"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
                      "details": "color, red, invalid literal for int() with base 10: 'red'",
                      "extra_info": {"input_name": "color", "received_value": "red"}}],
          "dependent_outputs": ["3"], "class_type": "EmptyImage"},
    "2": {"errors": [{"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""}],
          "dependent_outputs": [], "class_type": "ImageInvert"},
}


def test_node_errors_read_as_comfyui_prints_them():
    assert node_error_lines(NODE_ERRORS) == [
        "node errors:",
        "* EmptyImage 1 (output 3):",
        "  - Value 0 smaller than min of 1: width",
        "  - Failed to convert an input value to a INT value: color, red, invalid literal for int() with base 10: "
        "'red'",
        "* ImageInvert 2:",
        "  - Prompt has no outputs",
    ]


def test_no_node_errors_no_lines():
    assert node_error_lines(None) == node_error_lines({}) == node_error_lines([]) == []


def test_odd_shapes_from_a_backend_are_shown_as_they_came():
    assert node_error_lines({"7": "broken", "8": {"errors": "not a list", "dependent_outputs": "x"},
                             "9": {"class_type": "K", "errors": [{"type": "only_a_type"}, 5]}}) == [
        "node errors:",
        "* ? 7:", "  - broken",
        "* ? 8:", "  - not a list",
        "* K 9:", "  - only_a_type", "  - 5",
    ]


def test_a_backend_cannot_drive_the_terminal():
    lines = node_error_lines({"1\x1b[2J": {"class_type": "X\r", "errors": [{"message": "bad\nnews\x1b[31m"}]}})
    assert lines[1:] == ["* X\\r 1\\x1b[2J:", "  - bad\\nnews\\x1b[31m"]
    assert printable("plain, ünïcode") == "plain, ünïcode"


def test_a_failed_task_shows_its_error_then_its_node_errors():
    record = {"id": "T1", "status": "failed", "attempts": 1, "error": "rejected by ComfyUI: Prompt outputs failed "
              "validation", "outputs": [], "node_errors": NODE_ERRORS, "progress": 0.0}
    lines = task_lines(record)
    assert lines[:4] == ["id: T1", "status: failed", "attempts: 1",
                         "error: rejected by ComfyUI: Prompt outputs failed validation"]
    assert lines[5:] == node_error_lines(NODE_ERRORS)


def test_pool_labels_free_and_total_vram():
    backend = {"id": "static:a", "status": "healthy", "mode": "active", "inflight": 1, "tasks_done": 4, "gpu": 0,
               "vram_total": 24105 << 20, "vram_free": 23329 << 20, "error": None}
    lines = pool_lines({"hosts": [{"name": "gpu1", "kind": "docker", "containers": 1, "free_slots": 3,
                                   "down": None}],
                        "backends": [backend, {**backend, "id": "static:b", "vram_total": None, "gpu": None,
                                               "status": "unhealthy", "error": "connection refused"}],
                        "queue_length": 2, "autoscaler": {"reason": "steady"}})
    assert lines == [
        "host gpu1 (docker)  backends 1  free slots 3",
        "static:a                     healthy    active    inflight 1  done 4  gpu 0  vram free 23329 of 24105 MiB",
        "static:b                     unhealthy  active    inflight 1  done 4  error: connection refused",
        "queue 2; autoscaler: steady",
    ]



def test_tasks_are_listed_in_columns_with_their_prompt():
    lines = task_table([
        {"id": "01A", "status": "completed", "progress": 1.0, "workflow": "text-to-image", "backend": "process:8300",
         "prompt_text": "a lighthouse on a cliff at dawn"},
        {"id": "01B", "status": "pending", "progress": 0, "workflow": None, "backend": None,
         "prompt_text": "x" * 80 + "\x1b[2J"},
        {"id": "01C", "status": "failed", "progress": 0.25, "backend": "static:a", "prompt_text": None},
    ])
    assert lines == [
        "ID   STATUS     PROGRESS  WORKFLOW       BACKEND       PROMPT",
        "01A  completed  100%      text-to-image  process:8300  a lighthouse on a cliff at dawn",
        "01B  pending    0%        graph          -             " + "x" * 59 + "…",
        "01C  failed     25%       graph          static:a",
    ]


def test_workflows_are_listed_in_columns():
    assert workflow_table([{"name": "image-to-image", "version": 3, "params": {"image": {}, "prompt": {}}},
                           {"name": "t2i", "version": 12, "params": {}}]) == [
        "NAME            VERSION  PARAMETERS",
        "image-to-image  v3       image, prompt",
        "t2i             v12",
    ]


def test_a_task_shows_what_it_draws_and_with_which_parameters():
    record = {"id": "T2", "status": "completed", "workflow": "text-to-image", "prompt_text": "a red barn",
              "params": {"prompt": "a red barn", "steps": 20, "seed": 7}, "backend": "process:local:8300",
              "attempts": 1, "error": None, "progress": 1.0,
              "outputs": [{"filename": "comfyart_00001_.png", "size": 10, "content_type": "image/png"}]}
    assert task_lines(record) == [
        "id: T2", "status: completed", "workflow: text-to-image", "prompt: a red barn",
        'params: {"prompt": "a red barn", "steps": 20, "seed": 7}', "backend: process:local:8300", "attempts: 1",
        "[##############################] 100.0% completed", "output: comfyart_00001_.png (10 bytes, image/png)",
    ]


@pytest.mark.parametrize(("summary", "line"), [
    ({"read": False, "error": None}, "inventory: not read yet"),
    ({"read": False, "error": "GET /object_info answered HTTP 500"},
     "inventory: not read yet (GET /object_info answered HTTP 500)"),
    ({"read": True, "listed": False}, "inventory: lists nothing (not a ComfyUI with /object_info): it checks each "
                                      "prompt itself"),
    ({"read": True, "listed": True, "nodes": 40, "models": 2, "embeddings": 0, "shared_with": 0,
      "only_here": {"models": [], "more_models": 0, "nodes": [], "more_nodes": 0}},
     "inventory: 40 node classes, 2 models, 0 embeddings"),
    ({"read": True, "listed": True, "nodes": 40, "models": 30, "embeddings": 1, "shared_with": 3, "error": "x\ny",
      "only_here": {"models": ["a.safetensors"], "more_models": 25, "nodes": ["SaveVideo"], "more_nodes": 1}},
     "inventory: 40 node classes, 30 models, 1 embeddings (as 3 other backend(s)); only here: a.safetensors, "
     "25 more models, SaveVideo, 1 more node classes; last read failed: x\\ny"),
])
def test_inventory_line(summary, line):
    assert inventory_line(summary) == line


def test_models_table_says_where_each_model_is():
    models = [{"name": "a.safetensors", "kinds": ["checkpoints"], "held_by": 2, "healthy": 1,
               "backends": [{"id": "static:one", "status": "healthy", "mode": "active"},
                            {"id": "static:two", "status": "unhealthy", "mode": "active"}]},
              {"name": "b.safetensors", "kinds": ["checkpoints", "loras"], "held_by": 1, "healthy": 1,
               "backends": [{"id": "static:one", "status": "healthy", "mode": "draining"}]},
              {"name": "c.safetensors", "kinds": ["loras"], "held_by": 3, "healthy": 2}]  # as a client sees it
    assert models_table(models) == [
        "MODEL          KIND               WHERE",
        "a.safetensors  checkpoints        static:one, static:two (unhealthy)",
        "b.safetensors  checkpoints,loras  static:one (draining)",
        "c.safetensors  loras              3 backend(s), 2 healthy"]


CLUSTER = {
    "replica": "r2", "now_ms": 1_000_000,
    "leader": {"name": "r1", "epoch": 12, "since_ms": 1_000_000 - 125_000, "since": "2026-12-07T01:00:00.000Z"},
    "replicas": [
        {"name": "r1", "role": "leader", "version": "0.2.0", "heartbeat_ms": 999_600, "url": "http://r1:8100",
         "leader": True, "config_differs": False, "differing_sections": []},
        {"name": "r2", "role": "standby", "version": "0.2.0", "heartbeat_ms": 998_800, "url": "http://r2:8100",
         "leader": False, "config_differs": False, "differing_sections": []},
        {"name": "r3\x1b[31m", "role": "leader", "version": "0.1.0", "heartbeat_ms": 994_000,
         "url": "http://r3:8100", "leader": False, "config_differs": True,
         "differing_sections": ["pool", "static_backends"]},
    ],
    "elections": [],
}


def test_cluster_lines_show_the_leader_and_each_replica():
    lines = cluster_lines(CLUSTER)
    assert lines[0] == "leader r1  epoch 12  since 2026-12-07T01:00:00.000Z (2m 5s ago)"
    assert lines[1].split() == ["REPLICA", "ROLE", "VERSION", "HEARTBEAT", "URL"]
    assert lines[2].split() == ["r1", "leader", "0.2.0", "400ms", "ago", "http://r1:8100"]
    assert lines[3].split() == ["r2", "*", "standby", "0.2.0", "1.2s", "ago", "http://r2:8100"]  # * : answering
    # believes it leads without the lease; configured otherwise; its name cannot drive the terminal
    assert "\x1b" not in lines[4] and "leader (no lease)" in lines[4] and "6.0s ago" in lines[4]
    assert lines[4].endswith("config differs: pool, static_backends")


def test_cluster_lines_without_a_leader_or_replicas():
    assert cluster_lines({"replica": "r1", "now_ms": 5, "leader": None, "replicas": []}) == [
        "leader none: no replica holds the lease now", "(no replicas)"]


def test_status_lines_put_health_first_and_say_why_replicas_are_hidden():
    health = {"status": "ok", "backends": 3, "healthy_backends": 2, "queue_length": 7}
    lines = status_lines(health, CLUSTER)
    assert lines[0] == "daemon ok  backends 3 (2 healthy)  queue 7" and lines[1].startswith("leader r1")
    assert status_lines(health, None, "replicas: an admin key sees them (--key)") == [
        lines[0], "replicas: an admin key sees them (--key)"]


@pytest.mark.parametrize(("ms", "text"), [(-5, "0ms"), (999, "999ms"), (1_000, "1.0s"), (59_949, "59.9s"),
                                          (60_000, "1m 0s"), (3_599_000, "59m 59s"), (3_600_000, "1h 0m"),
                                          (90_061_000, "1d 1h")])
def test_age(ms, text):
    assert age(ms) == text
