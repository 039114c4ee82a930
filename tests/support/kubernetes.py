"""The Kubernetes manifests (deploy/kubernetes) as the tests see them: each overlay rendered by ``kubectl kustomize``
(any kubectl; scripts/setup installs Debian's kubernetes-client where there is none), every object validated offline
against the Kubernetes schemas that kubernetes-validate ships (strict: an unknown field fails, as a typo would go
unnoticed by a cluster), and KEDA's ScaledObject, a CRD the package does not know, against a schema of its own
(tests/support/schemas). Lookups by kind and name, and label selectors matched as Kubernetes matches them."""
from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support.paths import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
# every directory a user may apply (app/ and redis/ are parts of base/ and managed-redis/)
OVERLAYS = ("base", "keda", "hpa", "managed-redis")
# the oldest Kubernetes the manifests claim (policy/v1, autoscaling/v2 and the rest are older) and the newest known
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json"}

Manifest = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    """The objects ``kubectl kustomize`` makes of one overlay (deprecation warnings on stderr are fine: the
    kustomizations are written for kustomize v2 too)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: apt-get install kubernetes-client (scripts/setup installs it)"
    result = subprocess.run([kubectl, "kustomize", str(MANIFESTS / overlay)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr.strip()}"
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)
    assert all(doc for doc in objects), f"{overlay} renders an empty object"
    return objects


def schema_problems(manifest: Manifest) -> list[str]:
    """Why ``manifest`` is not a valid object (one line each), or nothing."""
    name = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
    crd = CRD_SCHEMAS.get((manifest.get("apiVersion", ""), manifest.get("kind", "")))
    if crd is not None:
        validator = jsonschema.Draft202012Validator(crd_schema(crd))
        return [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name} (Kubernetes {version}): {'.'.join(map(str, exc.absolute_path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
    return problems


@cache
def crd_schema(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "tests" / "support" / "schemas" / filename).read_text())
    return loaded


def find(objects: tuple[Manifest, ...], kind: str, name: str | None = None) -> Manifest:
    """The one object of this kind (and name)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: tuple[Manifest, ...]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def container(workload: Manifest, name: str) -> Manifest:
    found = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{workload['metadata']['name']} has no container {name}"
    return found[0]


def env_of(container_spec: Manifest) -> dict[str, Manifest]:
    """A container's variables by name (each its whole entry: value or valueFrom)."""
    return {entry["name"]: entry for entry in container_spec.get("env", [])}


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions, or a Service's plain map) selects ``labels``."""
    match_labels = selector.get("matchLabels", {}) if "matchLabels" in selector or "matchExpressions" in selector \
        else selector
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(expression_holds(expression, labels) for expression in selector.get("matchExpressions", []))


def expression_holds(expression: Manifest, labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    return (key in labels) == (operator == "Exists")


def secret_value(secret: Manifest, key: str) -> str:
    value = secret.get("stringData", {}).get(key)
    assert value is not None, f"Secret {secret['metadata']['name']} has no {key}"
    return str(value)
