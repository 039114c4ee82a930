"""The ``FrameSink`` the tracker hands the frames of prompts queued through this API: each one goes, rewritten for
its client, to that client's socket; previews gain their metadata for clients that asked for it. A frame ComfyUI
sends to no socket in particular goes to every socket of the prompt's caller."""
from __future__ import annotations

import struct
from typing import Any

from comfyart.api.comfyui.shapes import rewrite_frame, with_metadata
from comfyart.api.comfyui.sockets import Connection, callers
from comfyart.models import Relay

# frames of a running prompt that go to its client as they come; the end of a prompt is sent from its final
# status instead, so the client never hears of an attempt that comfyart retries elsewhere
RELAYED = frozenset({"execution_start", "execution_cached", "executing", "progress", "progress_state", "executed"})
# ComfyUI sends these to the prompt's client id, which for a prompt queued without one is None: send_sync(sid=None)
# sends them to every socket (its previews too, as type 1: no client negotiated metadata). The lifecycle frames it
# sends only when there is a client id.
BROADCAST_WITHOUT_CLIENT = frozenset({"progress", "progress_state"})
# the backend's end of a prompt: its end is told once the task is final, and the client's next prompt waits for it
BACKEND_ENDS = frozenset({"execution_success", "execution_error", "execution_interrupted"})
PROGRESS_TEXT = 3  # send_progress_text names no socket, whoever's prompt it is: every socket gets it


def binary_kind(payload: bytes) -> int | None:
    return struct.unpack(">I", payload[:4])[0] if len(payload) >= 4 else None


class FrameRelay:
    """``tracker.frames``: a prompt's frames go to the socket its ``Relay`` names, none after its end was sent; or,
    where ComfyUI names no socket, to each socket of the prompt's owner (never another caller's)."""

    def __init__(self, connections: dict[str, Connection]) -> None:
        self.connections = connections  # the sockets' own, by socket_key(owner, client id)

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None:
        if relay.client_id is None:
            if kind in BROADCAST_WITHOUT_CLIENT:
                frame = {"type": kind, "data": rewrite_frame(relay, kind, data)}
                for listener in callers(self.connections, relay.owner):
                    if relay.task_id not in listener.ended:
                        listener.put(frame)
            return
        connection = self.connections.get(relay.socket or "")
        if connection is None or relay.task_id in connection.ended:
            return
        if kind in BACKEND_ENDS or (kind == "executing" and data.get("node") is None):
            if relay.task_id in connection.open:
                connection.finishing_on_backend(relay.task_id)
            return
        if kind not in RELAYED:
            return
        connection.open.add(relay.task_id)
        frame = {"type": kind, "data": rewrite_frame(relay, kind, data)}
        connection.send(relay.task_id, lambda: self._queue(connection, relay, frame))

    @staticmethod
    def _queue(connection: Connection, relay: Relay, frame: dict[str, Any]) -> None:
        data = frame["data"]
        if frame["type"] in ("executing", "progress") and data.get("node") is not None:
            connection.nodes[relay.task_id] = str(data["node"])  # the node of the previews that follow
        if frame["type"] == "progress" and connection.preview_metadata:
            connection.hold(frame, relay.task_id)
        else:
            connection.put(frame)

    def forward_binary(self, relay: Relay, payload: bytes) -> None:
        if relay.client_id is None or binary_kind(payload) == PROGRESS_TEXT:
            for listener in callers(self.connections, relay.owner):
                if relay.task_id not in listener.ended:
                    listener.put(payload)
            return
        connection = self.connections.get(relay.socket or "")
        if connection is None or relay.task_id in connection.ended:
            return

        def queue_it() -> None:
            if connection.preview_metadata:
                preview = with_metadata(payload, relay, connection.nodes.get(relay.task_id))
                connection.put_preview(preview, relay.task_id)
            else:
                connection.put(payload)
        connection.send(relay.task_id, queue_it)
