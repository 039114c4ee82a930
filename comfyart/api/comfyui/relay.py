"""The ``FrameSink`` the tracker hands the frames of prompts queued through this API: each one goes, rewritten for
its client, to that client's socket; previews gain their metadata for clients that asked for it."""
from __future__ import annotations

from typing import Any

from comfyart.api.comfyui.shapes import rewrite_frame, with_metadata
from comfyart.api.comfyui.sockets import Connection
from comfyart.models import Relay

# frames of a running prompt that go to its client as they come; the end of a prompt is sent from its final
# status instead, so the client never hears of an attempt that comfyart retries elsewhere
RELAYED = frozenset({"execution_start", "execution_cached", "executing", "progress", "progress_state", "executed"})


class FrameRelay:
    """``tracker.frames``: a prompt's frames go to the socket its ``Relay`` names, none after its end was sent."""

    def __init__(self, connections: dict[str, Connection]) -> None:
        self.connections = connections  # the sockets' own, by socket_key(owner, client id)

    def forward(self, relay: Relay, kind: str, data: dict[str, Any]) -> None:
        connection = self.connections.get(relay.socket or "")
        if (connection is None or kind not in RELAYED or (kind == "executing" and data.get("node") is None)
                or relay.comfy_prompt_id in connection.ended):
            return
        if kind in ("executing", "progress") and data.get("node") is not None:
            connection.nodes[relay.comfy_prompt_id] = str(data["node"])
        connection.open.add(relay.comfy_prompt_id)
        frame = {"type": kind, "data": rewrite_frame(relay, kind, data)}
        if kind == "progress" and connection.preview_metadata:
            connection.hold(frame)
        else:
            connection.put(frame)

    def forward_binary(self, relay: Relay, payload: bytes) -> None:
        connection = self.connections.get(relay.socket or "")
        if connection is None or relay.comfy_prompt_id in connection.ended:
            return
        if connection.preview_metadata:
            connection.put_preview(with_metadata(payload, relay, connection.nodes.get(relay.comfy_prompt_id)))
        else:
            connection.put(payload)
