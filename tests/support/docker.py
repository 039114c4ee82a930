"""Two real Docker engines for the tests, and the emulator image on each.

Each engine runs with its own socket, data root and exec root, without a bridge or iptables. The data roots live
under ~/.cache/comfyart so images survive between runs; the Debian base is built once with mmdebstrap and kept
as a tarball; the emulator image is tagged by a hash of its sources, so an unchanged emulator is never rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from tests.support.paths import ROOT

CACHE = Path(os.environ.get("COMFYART_TEST_CACHE", Path.home() / ".cache" / "comfyart"))
BASE_TAG = "comfyart-base:bookworm-1"
BASE_PACKAGES = "python3-minimal,python3-aiohttp,python3-pil"
DAEMON_BASE_TAG = "comfyart-daemon-base:bookworm-1"
DAEMON_BASE_PACKAGES = "python3,python3-venv"  # what python:3.11-slim-bookworm gives the Dockerfile
WHEELS = CACHE / "wheels"  # scripts/setup fills it: the image is built without a network


@dataclass
class DockerEngine:
    name: str
    root: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        client = docker.DockerClient(base_url=self.url, timeout=120)
        try:
            yield client
        finally:
            client.close()


def start_engine(name: str) -> DockerEngine:
    root = CACHE / f"dockerd-{name}"
    exec_root = Path("/tmp") / f"comfyart-dockerd-{name}"  # short: a unix socket path has a length limit
    for path in (root, exec_root):
        path.mkdir(parents=True, exist_ok=True)
    socket = root / "docker.sock"
    _stop_stale(root / "docker.pid")
    socket.unlink(missing_ok=True)
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - dockerd writes it for good
    process = subprocess.Popen(
        [dockerd, "--host", f"unix://{socket}", "--data-root", str(root / "data"), "--exec-root", str(exec_root),
         "--pidfile", str(root / "docker.pid"), "--bridge=none", "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=log, start_new_session=True)
    engine = DockerEngine(name, root, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd {name} exited: see {root / 'dockerd.log'}")
        try:
            with engine.client() as client:
                client.ping()
            return engine
        except docker.errors.DockerException:
            time.sleep(0.3)
    raise RuntimeError(f"dockerd {name} did not answer within 60 s: see {root / 'dockerd.log'}")


def _stop_stale(pid_file: Path) -> None:
    """A dockerd left running by an interrupted test run would hold the data root."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass


def stop_engine(engine: DockerEngine) -> None:
    engine.process.terminate()
    try:
        engine.process.wait(30)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait()


def base_tarball(name: str = "emulator", packages: str = BASE_PACKAGES) -> Path:
    tarball = CACHE / f"debian-bookworm-{name}-base.tar"
    if not tarball.exists():
        partial = tarball.with_suffix(".partial")
        subprocess.run(["mmdebstrap", "--variant=apt", "--format=tar", f"--include={packages}", "bookworm",
                        str(partial)],
                       check=True, stdout=subprocess.DEVNULL)
        partial.rename(tarball)
    return tarball


def ensure_base_image(client: docker.DockerClient, tag: str, tarball: Callable[[], Path]) -> None:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        with open(tarball(), "rb") as tar:
            client.api.import_image_from_data(tar.read(), repository=tag.split(":")[0], tag=tag.split(":")[1])


def emulator_sources() -> list[Path]:
    files = [ROOT / "docker" / "emulator.Dockerfile", ROOT / "comfyart" / "__init__.py"]
    files += sorted((ROOT / "comfyart" / "emulator").glob("*.py"))
    return files


def emulator_tag() -> str:
    digest = hashlib.sha256()
    for path in emulator_sources():
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return f"comfyart-emulator:{digest.hexdigest()[:12]}"


def ensure_emulator_image(client: docker.DockerClient) -> str:
    tag = emulator_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    ensure_base_image(client, BASE_TAG, base_tarball)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for path in emulator_sources():
            archive.add(path, arcname=path.relative_to(ROOT).as_posix())
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, dockerfile="docker/emulator.Dockerfile", tag=tag,
                        buildargs={"BASE": BASE_TAG}, rm=True)
    return tag


def daemon_sources() -> list[Path]:
    """The daemon image's build context: what the Dockerfile copies (its .dockerignore lets through)."""
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "requirements.txt", ROOT / "constraints.txt"]
    for folder in ("comfyart", "config"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def build_daemon_image(client: docker.DockerClient) -> str:
    """The Dockerfile built as CI can: on a local Debian base, from the wheels scripts/setup made; tagged by a hash
    of its context, so an unchanged daemon is not built again."""
    wheels = sorted(WHEELS.glob("*.whl"))
    assert wheels, f"no wheels in {WHEELS}: scripts/setup makes them (pip wheel -r requirements.txt -w {WHEELS})"
    digest = hashlib.sha256()
    for path in daemon_sources():
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(" ".join(p.name for p in wheels).encode())
    tag = f"comfyart-daemon:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    ensure_base_image(client, DAEMON_BASE_TAG, lambda: base_tarball("daemon", DAEMON_BASE_PACKAGES))
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for path in daemon_sources():
            archive.add(path, arcname=path.relative_to(ROOT).as_posix())
        for wheel in wheels:
            archive.add(wheel, arcname=f"wheels/{wheel.name}")
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                        buildargs={"BASE": DAEMON_BASE_TAG, "PIP_INSTALL_ARGS": "--no-index --find-links /wheels"})
    return tag


def remove_test_containers(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"label": "comfyart.managed=true"}):
        container.remove(force=True)
