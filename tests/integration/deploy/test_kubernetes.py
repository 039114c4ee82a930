"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with ``kubectl kustomize`` and every object is
valid against the Kubernetes schemas (KEDA's against its own); the pieces fit together (selectors, ports, names,
Secret keys, the configuration the daemon accepts); and the properties that matter hold: readiness on /readyz, a
GPU per ComfyUI pod, the preStop drain within the grace period, the PDB, the NetworkPolicies. No cluster here: what a
cluster would do with them is not tested."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from comfyart.config.settings import Settings, load_settings
from tests.support.kubernetes import (
    OVERLAYS,
    container,
    env_of,
    find,
    kinds,
    pod_labels,
    render,
    schema_problems,
    secret_value,
    selects,
)
from tests.support.paths import ROOT

CORE = ["ConfigMap", "Deployment", "Deployment", "Namespace", "NetworkPolicy", "PersistentVolumeClaim",
        "PodDisruptionBudget", "Secret", "Service", "Service"]
REDIS = ["NetworkPolicy", "Service", "StatefulSet"]
EXPECTED_KINDS = {"base": sorted(CORE + REDIS), "keda": sorted(CORE + REDIS + ["ScaledObject"]),
                  "hpa": sorted(CORE + REDIS + ["HorizontalPodAutoscaler"]),
                  "managed-redis": sorted(CORE + ["Secret"])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates(overlay: str):
    objects = render(overlay)
    assert kinds(objects) == EXPECTED_KINDS[overlay]
    assert [problem for manifest in objects for problem in schema_problems(manifest)] == []
    namespace = find(objects, "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")


def test_a_typo_fails_validation():
    # the validation refuses what a cluster would silently ignore, for a core kind and for the CRD
    deployment = find(render("base"), "Deployment", "comfyart")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    assert any("replica" in problem for problem in schema_problems(typo))
    scaled = find(render("keda"), "ScaledObject")
    wrong = {**scaled, "spec": {**scaled["spec"], "minReplicas": 0}}
    assert any("minReplicas" in problem for problem in schema_problems(wrong))


def test_comfyart_replicas_probes_identity_and_user():
    objects = render("base")
    deployment = find(objects, "Deployment", "comfyart")
    daemon = container(deployment, "comfyart")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert daemon["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert daemon["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the image's own user (Dockerfile), never root
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user and pod["securityContext"]["runAsUser"] == int(user[1]) and pod["securityContext"]["runAsNonRoot"]
    assert daemon["securityContext"]["allowPrivilegeEscalation"] is False

    env = env_of(daemon)
    names = [entry["name"] for entry in daemon["env"]]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["COMFYART_CLUSTER__ADVERTISE_URL"]["value"] == "http://$(POD_IP):8100"
    assert env["COMFYART_CLUSTER__NAME"]["value"] == "$(POD_NAME)"
    # $(VAR) expands only variables defined earlier in the list
    assert names.index("POD_IP") < names.index("COMFYART_CLUSTER__ADVERTISE_URL")
    assert names.index("POD_NAME") < names.index("COMFYART_CLUSTER__NAME")
    keys = env["COMFYART_AUTH__KEYS"]["valueFrom"]["secretKeyRef"]
    secret_value(find(objects, "Secret", keys["name"]), keys["key"])

    # the API's Service reaches the pods' port; the PDB covers them and leaves at least one up
    service = find(objects, "Service", "comfyart")
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert service["spec"]["ports"][0]["targetPort"] in {port["name"] for port in daemon["ports"]}
    budget = find(objects, "PodDisruptionBudget", "comfyart")
    assert selects(budget["spec"]["selector"], pod_labels(deployment))
    assert budget["spec"].get("maxUnavailable") == 1 or 1 <= budget["spec"]["minAvailable"] < 3


def daemon_settings(overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Settings, dict]:
    """The configuration a comfyart pod of ``overlay`` runs with: the ConfigMap's file under the Deployment's
    environment (downward API and Secrets resolved as the kubelet would), loaded by the daemon's own loader."""
    objects = render(overlay)
    deployment = find(objects, "Deployment", "comfyart")
    daemon = container(deployment, "comfyart")
    config_mount = next(m for m in daemon["volumeMounts"] if m["name"] == "config")
    config_map = find(objects, "ConfigMap", next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                                                 if v["name"] == "config")["configMap"]["name"])
    environment = {"POD_IP": "127.1.2.3", "POD_NAME": "comfyart-7d9f-x2k"}
    for entry in daemon["env"]:
        if "value" in entry:
            environment[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environment[m[1]], entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = secret_value(find(objects, "Secret", ref["name"]), ref["key"])
    assert environment["COMFYART_CONFIG"].startswith(config_mount["mountPath"] + "/")
    document = yaml.safe_load(config_map["data"][Path(environment["COMFYART_CONFIG"]).name])
    path = tmp_path / "comfyart.yaml"
    path.write_text(yaml.safe_dump(document))
    for name in [n for n in os.environ if n.startswith("COMFYART_") or n == "REDIS_URL"]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings(path), document


def test_the_config_map_is_a_configuration_the_daemon_accepts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    objects = render("base")
    settings, document = daemon_settings("base", monkeypatch, tmp_path)
    assert settings.cluster.name == "comfyart-7d9f-x2k" and settings.cluster.advertise_url == "http://127.1.2.3:8100"
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8100
    assert {key.name: key.role for key in settings.auth.keys} == {"ops": "admin", "drain": "admin"}
    # redis.url names the Redis Service and its port
    redis = urlsplit(settings.redis.url or "")
    service = find(objects, "Service", redis.hostname)
    assert service["spec"]["ports"][0]["port"] == redis.port
    assert selects(service["spec"]["selector"], pod_labels(find(objects, "StatefulSet", "redis")))
    # the data volume is data_dir
    daemon = container(find(objects, "Deployment", "comfyart"), "comfyart")
    assert {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}[str(settings.data_dir)] == "data"

    # the DNS source resolves the headless ComfyUI Service by its full name, on its port
    comfyui = find(objects, "Service", "comfyui")
    namespace = comfyui["metadata"]["namespace"]
    [source] = document["dns_backends"]
    assert source["name"] == f"comfyui.{namespace}.svc.cluster.local"
    assert source["port"] == comfyui["spec"]["ports"][0]["port"] == 8188 and source["interval_s"] > 0


def test_managed_redis_replaces_the_statefulset_by_a_secret_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    objects = render("managed-redis")
    assert not [o for o in objects if o["kind"] == "StatefulSet" or o["metadata"]["name"].startswith("redis")]
    settings, _ = daemon_settings("managed-redis", monkeypatch, tmp_path)
    assert settings.redis.url == secret_value(find(objects, "Secret", "comfyart-redis"), "url")
    assert settings.redis.url.startswith("rediss://")


def test_redis_keeps_its_data():
    objects = render("base")
    redis = find(objects, "StatefulSet", "redis")
    server = container(redis, "redis")
    args = server["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in server["volumeMounts"]}[claim["metadata"]["name"]] == \
        args[args.index("--dir") + 1]


def test_comfyui_pods_have_a_gpu_their_models_and_the_headless_service():
    objects = render("base")
    deployment = find(objects, "Deployment", "comfyui")
    comfyui = container(deployment, "comfyui")
    assert str(comfyui["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    models = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["readOnly"] is True
    find(objects, "PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"])
    assert next(m for m in comfyui["volumeMounts"] if m["name"] == "models")["readOnly"] is True
    # ready pods only in the DNS answer: a ComfyUI still loading is not sent work
    assert comfyui["readinessProbe"]["httpGet"]["port"] == "comfyui"
    service = find(objects, "Service", "comfyui")
    assert service["spec"]["clusterIP"] == "None" and not service["spec"].get("publishNotReadyAddresses")
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert service["spec"]["ports"][0]["targetPort"] == "comfyui"
    assert {p["name"]: p["containerPort"] for p in comfyui["ports"]}["comfyui"] == 8188


def test_a_comfyui_pod_is_drained_before_it_stops():
    objects = render("base")
    deployment = find(objects, "Deployment", "comfyui")
    pod = deployment["spec"]["template"]["spec"]
    comfyui, drain = container(deployment, "comfyui"), container(deployment, "drain")
    # the drain runs in the sidecar (the ComfyUI image has no comfyart), on this pod's address, and says when done
    [shell, flag, script] = drain["lifecycle"]["preStop"]["exec"]["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    drain_command, done = [shlex.split(part) for part in script.split(";")]
    assert drain_command[:2] == ["comfyart", "drain"] and "--wait" in drain_command
    assert drain_command[drain_command.index("--address") + 1] == "$POD_IP:8188"
    assert env_of(drain)["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    timeout = float(drain_command[drain_command.index("--timeout") + 1])
    assert timeout < pod["terminationGracePeriodSeconds"] and pod["terminationGracePeriodSeconds"] >= 300
    # ComfyUI's own hook waits for that file, on a volume both mount: its SIGTERM comes once it is idle
    assert done[0] == "touch"
    waited = comfyui["lifecycle"]["preStop"]["exec"]["command"]
    assert waited[:2] == ["/bin/sh", "-c"] and f"[ ! -e {done[1]} ]" in waited[2]
    shared = {m["name"] for m in comfyui["volumeMounts"] if done[1].startswith(m["mountPath"] + "/")}
    assert shared and shared == {m["name"] for m in drain["volumeMounts"] if done[1].startswith(m["mountPath"] + "/")}

    # the sidecar reaches comfyart's Service with an admin key of the Secret (from its environment, not argv)
    url = urlsplit(env_of(drain)["COMFYART_URL"]["value"])
    assert drain_command[drain_command.index("--url") + 1] == "$COMFYART_URL"
    assert find(objects, "Service", url.hostname)["spec"]["ports"][0]["port"] == url.port
    ref = env_of(drain)["COMFYART_KEY"]["valueFrom"]["secretKeyRef"]
    secret = find(objects, "Secret", ref["name"])
    admins = [k["key"] for k in yaml.safe_load(secret_value(secret, "keys")) if k["role"] == "admin"]
    assert secret_value(secret, ref["key"]) in admins and "--key" not in drain_command
    assert drain["image"] == container(find(objects, "Deployment", "comfyart"), "comfyart")["image"]


def test_the_drain_sidecar_waits_for_sigterm_and_exits_at_once():
    # its main process does nothing but wait: stopped, it must exit 0 at once (not hold the pod for the grace period)
    command = container(find(render("base"), "Deployment", "comfyui"), "drain")["command"]
    assert command[0] == "python3"
    waiting = subprocess.Popen([sys.executable, *command[1:]])
    try:
        time.sleep(0.5)
        assert waiting.poll() is None
        started = time.monotonic()
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=5) == 0 and time.monotonic() - started < 2
    finally:
        waiting.kill()


def test_only_comfyart_reaches_comfyui_and_redis():
    objects = render("base")
    comfyart = pod_labels(find(objects, "Deployment", "comfyart"))
    targets = {"comfyui": (find(objects, "Deployment", "comfyui"), 8188),
               "redis": (find(objects, "StatefulSet", "redis"), 6379)}
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for workload, port in targets.values():
        [policy] = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels(workload))]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [rule] = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        [peer] = rule["from"]
        assert set(peer) == {"podSelector"} and selects(peer["podSelector"], comfyart)
        assert not any(selects(peer["podSelector"], pod_labels(other)) for other, _ in targets.values())
    # comfyart itself is not fenced in: its clients and the drain sidecars reach it
    assert not [p for p in policies if selects(p["spec"]["podSelector"], comfyart)]


def test_keda_and_the_hpa_scale_comfyui_to_what_comfyart_wants(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    settings, _ = daemon_settings("keda", monkeypatch, tmp_path)
    scaled = find(render("keda"), "ScaledObject", "comfyui")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "comfyui"}
    assert scaled["minReplicaCount"] == settings.pool.min_containers == 0
    assert scaled["maxReplicaCount"] == settings.pool.max_containers
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus" and "comfyart_autoscaler_wanted_backends" in trigger["metadata"]["query"]
    # replicas = ceil(wanted / 1): exactly the wanted count
    assert (trigger["metadata"]["metricType"], trigger["metadata"]["threshold"]) == ("AverageValue", "1")

    hpa = find(render("hpa"), "HorizontalPodAutoscaler", "comfyui")["spec"]
    assert hpa["scaleTargetRef"] == scaled["scaleTargetRef"]
    assert hpa["maxReplicas"] == settings.pool.max_containers and hpa["minReplicas"] == 1
    [metric] = hpa["metrics"]
    assert metric["external"]["metric"]["name"] == "comfyart_autoscaler_wanted_backends"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
