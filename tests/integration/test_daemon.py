"""``comfyart serve`` as a new user starts it: a port already taken (another daemon, anything) stops it at once, and
a configuration with no backend says that its tasks will wait."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from comfyart.api.listener import listen_socket
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port


def test_a_port_in_use_stops_serve_at_once_with_one_line_and_starts_nothing(tmp_path: Path, redis_url: str):
    with socket.create_server(("127.0.0.1", 0)) as taken:  # listening, as another daemon would be
        port = taken.getsockname()[1]
        config = tmp_path / "comfyart.yaml"
        config.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "port": port}, "redis": {"url": redis_url},
                                          "data_dir": str(tmp_path / "data"),
                                          "processes": {"ports": [port + 1, port + 2]}}))
        daemon = subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(config)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)  # it used to hang there, deaf to SIGTERM
            daemon.communicate()
            raise AssertionError("comfyart serve on a port in use did not exit") from None
    assert daemon.returncode == 2, (out, err)
    assert err.strip() == (f"comfyart: cannot listen on 127.0.0.1:{port}: address already in use (another comfyart "
                           f"serve? set server.port, e.g. COMFYART_SERVER__PORT={port + 1} comfyart serve ...)")
    assert not (tmp_path / "data" / "processes").exists() or not any((tmp_path / "data" / "processes").iterdir())


def test_serve_without_a_backend_says_tasks_will_wait(tmp_path: Path, redis_url: str):
    """``comfyart serve`` with no ``--config`` (or one naming no backend) serves, and says why nothing will run."""
    port = free_port()
    config = tmp_path / "comfyart.yaml"
    config.write_text(yaml.safe_dump({"server": {"host": "127.0.0.1", "port": port}, "redis": {"url": redis_url},
                                      "data_dir": str(tmp_path / "data")}))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(config)], cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, timeout_s=30)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
    assert "WARNING no backends: the configuration names none" in log.read_text()


async def test_the_api_socket_answers_without_nagles_delay():
    """The daemon binds its own socket (listen_socket) and hands it to uvicorn. asyncio turns Nagle's algorithm off
    only on connections of a socket that says it is TCP; a bare socket(AF_INET, SOCK_STREAM) does not, and every
    small answer then waited ~40 ms for the client's delayed ACK (50 task submissions took 2.2 s instead of 0.15)."""
    nodelay: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    with listen_socket("127.0.0.1", free_port()) as listener:
        server = await asyncio.start_server(on_connection, sock=listener)
        async with server:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            await reader.read()  # the server has accepted and closed it
            writer.close()
    assert nodelay == [1], "Nagle's algorithm is on for the API's connections"
