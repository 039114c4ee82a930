"""What authentication and quotas cost per request.

    python3 bench/auth.py [--count N]

Two ``comfyart serve`` processes on one redis-server, no backends: one with auth off, one with auth on (a key from
the configuration, a key made at run time and kept in Redis as a hash, the basic-auth admin user, and a client
key under a submission quota). One client reads the same task record N times with each credential, then submits
N tasks as an admin (no quota) and as a client (rate and queue quota checked). Reports p50/p99 per request and
what each credential adds over auth off. Prints a table and writes bench/results/auth.json.
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, Rig, graph, percentile  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
CLIENT_KEY = "bench-client-key-0123456789abcdef"
USER, PASSWORD = "admin", "bench-password-0123"


Variant = tuple[httpx.Client, str, str, dict[str, str] | None, Callable[[int], dict] | None]


def interleaved(variants: dict[str, Variant], count: int) -> dict[str, list[float]]:
    """Seconds per request of each variant, taking turns request by request: the machine's noise falls on all of
    them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(count):
        for name, (client, method, path, headers, body) in variants.items():
            start = time.perf_counter()
            answer = client.request(method, path, headers=headers, json=body(i) if body else None)
            times[name].append(time.perf_counter() - start)
            assert answer.status_code < 300, answer.text
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-bench-auth-")))
    try:
        redis_url = rig.redis()
        _, open_api = rig.daemon(redis_url, [], "auth-off")
        auth = {"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY},
                         {"name": "client", "key": CLIENT_KEY, "max_queued": 10_000_000}],
                "admin_user": USER, "admin_password": PASSWORD,
                "quotas": {"submissions_per_minute": 6_000_000, "burst": 1000}}
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        _, api = rig.daemon(redis_url, [], "auth-on", headers=admin, auth=auth)
        with httpx.Client(base_url=api, timeout=30) as client, httpx.Client(base_url=open_api, timeout=30) as plain:
            made = client.post("/api/keys", headers=admin, json={"name": "made", "role": "admin"}).json()["key"]
            credentials = {
                "auth off": (plain, None),
                "config key": (client, admin),
                "run-time key (Redis)": (client, {"Authorization": f"Bearer {made}"}),
                "basic auth": (client, {"Authorization": "Basic " + base64.b64encode(
                    f"{USER}:{PASSWORD}".encode()).decode()}),
            }
            task_ids = {name: api_client.post("/api/tasks", headers=headers, json={"prompt": graph(0)}).json()["id"]
                        for name, (api_client, headers) in credentials.items()}
            reads: dict[str, Variant] = {
                f"GET /api/tasks/{{id}}, {name}": (api_client, "GET", f"/api/tasks/{task_ids[name]}", headers, None)
                for name, (api_client, headers) in credentials.items()}
            interleaved(reads, 200)  # warm up
            rows = interleaved(reads, args.count)

            def body(i: int) -> dict:
                return {"prompt": graph(i)}

            rows.update(interleaved({
                "submit, auth off": (plain, "POST", "/api/tasks", None, body),
                "submit, admin key": (client, "POST", "/api/tasks", admin, body),
                "submit, client key (quotas)": (client, "POST", "/api/tasks",
                                                {"Authorization": f"Bearer {CLIENT_KEY}"}, body)}, args.count))
        base_read = percentile(rows["GET /api/tasks/{id}, auth off"], 0.5)
        base_submit = percentile(rows["submit, auth off"], 0.5)
        result = {"count": args.count, "rows": {}}
        print(f"{'request':<45} {'p50 ms':>8} {'p99 ms':>8} {'added p50 ms':>13}")
        for name, times in rows.items():
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            base = base_submit if name.startswith("submit") else base_read
            added = p50 - base * 1000
            result["rows"][name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "added_p50_ms": round(added, 3)}
            print(f"{name:<45} {p50:8.2f} {p99:8.2f} {added:13.2f}")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "auth.json").write_text(json.dumps(result, indent=2) + "\n")
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
