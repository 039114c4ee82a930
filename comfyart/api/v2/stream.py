"""What one ``GET /api/v2/jobs/{id}/events`` stream sends, and when (API-V2.md §6.5): the frames that bring its
client from what it was told to the job as ``shapes.job`` shows it now, progress and previews at most every
``THROTTLE_S`` (the latest held back, never lost), a keepalive comment when it was quiet for ``keepalive_s``, and
how many streams each key holds. Pure: the job, the preview frame and the monotonic time come in as arguments;
``api.v2.events`` does the I/O.

Order: a ``status`` snapshot first (``progress`` and the latest ``preview`` follow it); every status change; each
``output`` once, before the terminal ``status``, which is the last frame. A stream opened on a finished job sends
its outputs, then its terminal status."""
from __future__ import annotations

import base64
import json
import math
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyart.api.v2.shapes import TERMINAL

THROTTLE_S = 0.5  # progress and previews: about 2 a second
KEEPALIVE = b": keepalive\n\n"
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4  # ComfyUI's binary frame types (server.BinaryEventTypes)
PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}


def frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE frame: its event name and compact JSON data; no ``id:`` (the contract has no replay)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def status_data(job: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"status": job["status"]}
    if job.get("queue_position") is not None:
        data["queue_position"] = job["queue_position"]
    return data


def preview_data(payload: bytes, node: str | None) -> dict[str, Any] | None:
    """A backend's preview frame as the ``preview`` event's data; None for any other binary frame (a node's
    progress text) or one cut short. ``node``: the node that ran when it came (a type-4 frame names its own)."""
    if len(payload) < 8:
        return None
    kind, word = struct.unpack(">II", payload[:8])
    if kind == PREVIEW_IMAGE and word in PREVIEW_FORMATS:
        content_type, image = PREVIEW_FORMATS[word], payload[8:]
    elif kind == PREVIEW_IMAGE_WITH_METADATA and 8 + word <= len(payload):
        try:
            metadata = json.loads(payload[8:8 + word])
        except ValueError:
            return None
        if not isinstance(metadata, dict):
            return None
        told_node, told_type = metadata.get("node_id"), metadata.get("image_type")
        node = str(told_node) if told_node is not None else node
        content_type = told_type if isinstance(told_type, str) and told_type.startswith("image/") else "image/png"
        image = payload[8 + word:]
    else:
        return None
    if not image:
        return None
    return {"node_id": node or "", "content_type": content_type, "data_base64": base64.b64encode(image).decode()}


@dataclass
class Throttled:
    """One kind of frame sent at most every ``interval_s``: a newer one replaces the one held back."""

    interval_s: float = THROTTLE_S
    sent_at: float = -math.inf
    held: bytes | None = None

    def offer(self, encoded: bytes, now: float) -> bytes | None:
        """``encoded`` if it may go now; else it is held back (see ``due``)."""
        if now - self.sent_at >= self.interval_s:
            self.sent_at, self.held = now, None
            return encoded
        self.held = encoded
        return None

    def due(self, now: float) -> bytes | None:
        """The frame held back, once its time came."""
        if self.held is None or now - self.sent_at < self.interval_s:
            return None
        encoded, self.held, self.sent_at = self.held, None, now
        return encoded

    def wake_at(self) -> float:
        return self.sent_at + self.interval_s if self.held is not None else math.inf


@dataclass
class EventStream:
    """What one stream told its client, and what it holds back."""

    keepalive_s: float
    status: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    outputs: set[str] = field(default_factory=set)
    ended: bool = False
    last_sent: float = 0.0
    progress_frames: Throttled = field(default_factory=Throttled)
    preview_frames: Throttled = field(default_factory=Throttled)

    def on_job(self, job: Mapping[str, Any], now: float) -> list[bytes]:
        """The frames that bring the client up to ``job`` (``shapes.job``); after the terminal status, none."""
        if self.ended:
            return []
        frames: list[bytes] = []
        status, terminal = status_data(job), job["status"] in TERMINAL
        if status != self.status and not terminal:
            self.status = status
            frames.append(frame("status", status))
        if not terminal and job.get("progress") is not None and job["progress"] != self.progress:
            self.progress = job["progress"]
            sent = self.progress_frames.offer(frame("progress", job["progress"]), now)
            frames += [sent] if sent is not None else []
        for output in job.get("outputs") or ():
            if output["id"] not in self.outputs:
                self.outputs.add(output["id"])
                frames.append(frame("output", output))
        if terminal:  # what was held back is stale now
            self.ended, self.status = True, status
            frames.append(frame("status", status))
        else:
            frames += self._due(now)
        return self._sent(frames, now)

    def on_preview(self, data: Mapping[str, Any] | None, now: float) -> list[bytes]:
        if self.ended:
            return []
        sent = self.preview_frames.offer(frame("preview", data), now) if data is not None else None
        return self._sent([sent, *self._due(now)] if sent is not None else self._due(now), now)

    def on_time(self, now: float) -> list[bytes]:
        """What is due without news: held-back frames whose time came, else a keepalive after a quiet spell."""
        if self.ended:
            return []
        frames = self._due(now)
        if not frames and now - self.last_sent >= self.keepalive_s:
            frames = [KEEPALIVE]
        return self._sent(frames, now)

    def _due(self, now: float) -> list[bytes]:
        """Held-back frames whose time came: sent with whatever goes out next, so that a flood of one kind (a
        sampler's previews) never keeps the other waiting."""
        return [f for f in (self.progress_frames.due(now), self.preview_frames.due(now)) if f is not None]

    def wait_s(self, now: float) -> float:
        """How long the stream may wait for news before ``on_time`` has something to send."""
        wake = min(self.last_sent + self.keepalive_s, self.progress_frames.wake_at(), self.preview_frames.wake_at())
        return max(0.0, wake - now)

    def _sent(self, frames: list[bytes], now: float) -> list[bytes]:
        if frames:
            self.last_sent = now
        return frames


@dataclass
class StreamSlots:
    """How many streams each key holds open, against ``api_v2.max_streams_per_key``."""

    held: Counter[str] = field(default_factory=Counter)

    def take(self, key: str, limit: int) -> bool:
        """One more stream for ``key``, unless it holds ``limit`` already."""
        if self.held[key] >= limit:
            return False
        self.held[key] += 1
        return True

    def give_back(self, key: str) -> None:
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]
