"""Which socket outboxes a backend's frame reaches (api.comfyui.relay): its client's, or, where ComfyUI names no
socket, every socket of the prompt's caller and no other caller's."""
from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from comfyart.api.comfyui.relay import RELAYED, FrameRelay
from comfyart.api.comfyui.sockets import Connection
from comfyart.models import Relay, socket_key

PREVIEW = struct.pack(">II", 1, 2) + b"\x89PNG"
TEXT = struct.pack(">II", 3, 1) + b"2hello"


def sockets() -> dict[str, Connection]:
    """alice's sockets "one" and "two", and bob's "one"."""
    return {socket_key(owner, sid): Connection(sid, owner) for owner, sid in
            (("alice", "one"), ("alice", "two"), ("bob", "one"))}


def heard(connections: dict[str, Connection]) -> dict[str, list[Any]]:
    return {key.replace("\0", "/"): [f if isinstance(f, bytes) else f["type"] for f in c.frames]
            for key, c in connections.items()}


@pytest.mark.parametrize("kind", sorted(RELAYED | {"execution_success", "execution_error", "status"}))
def test_a_prompt_without_a_client_id_broadcasts_its_progress_to_its_callers_sockets_only(kind: str):
    connections = sockets()
    relay = FrameRelay(connections)
    relay.forward(Relay("task", "mine", None, "alice"), kind, {"prompt_id": "backend's", "node": "9"})
    relay.forward_binary(Relay("task", "mine", None, "alice"), PREVIEW)
    broadcast = [kind, PREVIEW] if kind in ("progress", "progress_state") else [PREVIEW]
    assert heard(connections) == {"alice/one": broadcast, "alice/two": broadcast, "bob/one": []}
    for frame in connections[socket_key("alice", "one")].frames:
        if isinstance(frame, dict):
            assert frame["data"]["prompt_id"] == "mine"  # the client's prompt id, never comfyart's


def test_a_prompt_of_a_client_goes_to_its_socket_and_its_progress_text_to_every_socket_of_its_caller():
    connections = sockets()
    relay = FrameRelay(connections)
    mine = Relay("task", "mine", "one", "alice")
    relay.forward(mine, "progress", {"prompt_id": "backend's", "node": "9", "value": 0, "max": 1})
    relay.forward_binary(mine, PREVIEW)
    relay.forward_binary(mine, TEXT)
    assert heard(connections) == {"alice/one": ["progress", PREVIEW, TEXT], "alice/two": [TEXT], "bob/one": []}


def test_without_auth_every_socket_is_the_callers():
    connections = {sid: Connection(sid) for sid in ("one", "two")}
    FrameRelay(connections).forward(Relay("task", "mine", None), "progress", {"prompt_id": "x", "node": "1"})
    assert heard(connections) == {"one": ["progress"], "two": ["progress"]}


def test_a_reused_prompt_id_is_relayed_again_after_its_first_run_ended():
    connections = sockets()
    relay = FrameRelay(connections)
    socket = connections[socket_key("alice", "one")]
    socket.ended["first task"] = None  # the first run under "fixed" was told its end
    relay.forward(Relay("first task", "fixed", "one", "alice"), "executing", {"prompt_id": "a", "node": "1"})
    relay.forward(Relay("second task", "fixed", "one", "alice"), "execution_start", {"prompt_id": "b"})
    assert [f["type"] for f in socket.frames] == ["execution_start"]
    assert socket.open == {"second task"}


def test_a_progress_waits_for_its_preview_only_while_previews_follow_it():
    """For a client that asked for preview metadata, a progress frame is held until its preview (type 4 goes first,
    as ComfyUI sends it); once a progress waited in vain, that task's progress goes out at once, until a preview
    comes again."""
    connection = Connection("one", "alice")
    connection.preview_metadata = True
    relay = FrameRelay({socket_key("alice", "one"): connection})
    mine = Relay("task", "mine", "one", "alice")

    def step(n: int) -> None:
        relay.forward(mine, "progress", {"prompt_id": "backend's", "node": "9", "value": n, "max": 9})

    def sent() -> list[Any]:
        frames = [f if isinstance(f, dict) else struct.unpack(">I", f[:4])[0] for f in connection.frames]
        connection.frames.clear()
        return [f["data"]["value"] if isinstance(f, dict) else f"preview {f}" for f in frames]

    step(1)
    assert sent() == [] and connection.held is not None
    relay.forward_binary(mine, PREVIEW)
    assert sent() == ["preview 4", 1]
    step(2)
    connection.overdue()  # what the socket's writer does after HOLD_PROGRESS_S
    assert sent() == [2]
    step(3)
    assert sent() == [3] and connection.held is None  # no waiting any more
    relay.forward_binary(mine, PREVIEW)
    step(4)
    assert sent() == ["preview 4"] and connection.held is not None  # previews again: it waits again
    connection.end("task")
    assert "task" not in connection.unpreviewed


@pytest.mark.parametrize("backend_end", [("execution_success", "x"), ("execution_error", "x"),
                                         ("execution_interrupted", "x"), ("executing", None)])
def test_the_next_prompts_frames_wait_until_the_end_of_the_one_its_backend_finished_is_told(backend_end):
    connections = sockets()
    relay = FrameRelay(connections)
    one = connections[socket_key("alice", "one")]
    one.preview_metadata = True
    first, second = Relay("t1", "first", "one", "alice"), Relay("t2", "second", "one", "alice")
    relay.forward(first, "execution_start", {"prompt_id": "b1"})
    kind, node = backend_end
    relay.forward(first, kind, {"prompt_id": "b1", "node": node})  # its end: told once the task is final
    relay.forward(second, "execution_start", {"prompt_id": "b2"})
    relay.forward(second, "progress", {"prompt_id": "b2", "node": "7", "value": 0, "max": 1})
    relay.forward_binary(second, PREVIEW)
    assert [f["type"] for f in one.frames] == ["execution_start"]
    one.put({"type": "execution_success", "data": {"prompt_id": "first"}})  # as Sockets._send_end tells it
    one.end("t1")
    assert [f if isinstance(f, bytes) else f["type"] for f in one.frames][:3] == [
        "execution_start", "execution_success", "execution_start"]
    preview = one.frames[3]
    assert isinstance(preview, bytes) and struct.unpack(">I", preview[:4])[0] == 4  # node 7's, with metadata
    assert one.frames[4]["type"] == "progress" and len(one.frames) == 5  # after its preview, as ComfyUI sends it


def test_a_prompt_whose_end_is_never_told_holds_the_next_one_back_for_a_while_only(monkeypatch):
    connections = sockets()
    relay = FrameRelay(connections)
    one = connections[socket_key("alice", "one")]
    first, second = Relay("t1", "first", "one", "alice"), Relay("t2", "second", "one", "alice")
    relay.forward(first, "execution_start", {"prompt_id": "b1"})
    relay.forward(first, "execution_error", {"prompt_id": "b1"})  # retried elsewhere, say: no end told yet
    relay.forward(second, "execution_start", {"prompt_id": "b2"})
    assert len(one.frames) == 1 and one.wait_s() is not None and 9 < one.wait_s() <= 10
    clock = time.monotonic() + 10.5
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    assert one.wait_s() == 0.0
    one.overdue()
    assert [f["data"]["prompt_id"] for f in one.frames] == ["first", "second"]


def test_a_prompt_that_runs_again_holds_nothing_back():
    connections = sockets()
    relay = FrameRelay(connections)
    one = connections[socket_key("alice", "one")]
    first = Relay("t1", "first", "one", "alice")
    relay.forward(first, "execution_start", {"prompt_id": "b1"})
    relay.forward(first, "execution_error", {"prompt_id": "b1"})
    relay.forward(first, "execution_start", {"prompt_id": "b1-again"})  # its next attempt, on another backend
    assert [f["type"] for f in one.frames] == ["execution_start", "execution_start"]
    assert one.finishing == {} and one.wait_s() is None


def told_end(connection: Connection, task_id: str, prompt_id: str) -> None:
    """What Sockets._send_end does once the task is final."""
    def tell() -> None:
        connection.put({"type": "execution_success", "data": {"prompt_id": prompt_id}})
        connection.end(task_id)
    connection.send(task_id, tell, end=True)


def test_a_prompt_held_back_that_ends_meanwhile_is_told_in_order_after_the_one_before():
    connections = sockets()
    relay = FrameRelay(connections)
    one = connections[socket_key("alice", "one")]
    first, second, third = (Relay(f"t{i}", name, "one", "alice") for i, name in enumerate(("a", "b", "c")))
    relay.forward(first, "execution_start", {"prompt_id": "b1"})
    relay.forward(first, "execution_success", {"prompt_id": "b1"})
    relay.forward(second, "execution_start", {"prompt_id": "b2"})  # a cached run: over at once
    relay.forward(second, "execution_success", {"prompt_id": "b2"})
    relay.forward(third, "execution_start", {"prompt_id": "b3"})
    told_end(one, "t1", "b")  # the second's outputs were stored first: its end waits for the first's
    assert [(f["type"], f["data"]["prompt_id"]) for f in one.frames] == [("execution_start", "a")]
    told_end(one, "t0", "a")
    assert [(f["type"], f["data"]["prompt_id"]) for f in one.frames] == [
        ("execution_start", "a"), ("execution_success", "a"), ("execution_start", "b"), ("execution_success", "b"),
        ("execution_start", "c")]
    assert one.waiting == [] and one.finishing == {}
