"""The frame decisions of a v2 job events stream (api.v2.stream): the encoding, previews read from ComfyUI's binary
frames, the order (status first, outputs before the terminal status, nothing after it), throttling that keeps the
latest, keepalives after a quiet spell, and the per-key stream slots."""
from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from comfy_low.sse import SSEDecoder

from comfyart.api.v2.stream import KEEPALIVE, THROTTLE_S, EventStream, StreamSlots, Throttled, frame, preview_data


def job(status: str, *, progress: dict[str, Any] | None = None, outputs: tuple[str, ...] = (),
        queue_position: int | None = None) -> dict[str, Any]:
    return {"status": status, "queue_position": queue_position, "progress": progress,
            "outputs": [{"id": name, "name": name} for name in outputs]}


def decoded(frames: list[bytes]) -> list[tuple[str, Any]]:
    """The frames as the SDK's own SSE decoder reads them (keepalives as ':')."""
    read: list[tuple[str, Any]] = []
    for one in frames:
        if one == KEEPALIVE:
            read.append((":", None))
            continue
        decoder = SSEDecoder()
        events = [event for line in one.decode().split("\n") for event in decoder.push(line)]
        assert len(events) == 1
        read.append((events[0].event, events[0].data))
    return read


def progress(value: float) -> dict[str, Any]:
    return {"value": value, "nodes_done": 0, "nodes_total": 3, "current_node": "3", "current_node_class": "KSampler",
            "step": None, "steps": None, "message": None}


def test_a_frame_is_its_event_and_compact_json_without_an_id():
    assert frame("status", {"status": "queued", "queue_position": 2}) == \
        b'event: status\ndata: {"status":"queued","queue_position":2}\n\n'


@pytest.mark.parametrize(("kind", "code", "content_type"), [(1, 1, "image/jpeg"), (1, 2, "image/png")])
def test_a_plain_preview_names_the_running_node(kind, code, content_type):
    data = preview_data(struct.pack(">II", kind, code) + b"IMAGE", "3")
    assert data == {"node_id": "3", "content_type": content_type, "data_base64": base64.b64encode(b"IMAGE").decode()}


def test_a_preview_with_metadata_names_its_own_node_and_type():
    metadata = json.dumps({"node_id": "12", "image_type": "image/webp"}).encode()
    payload = struct.pack(">II", 4, len(metadata)) + metadata + b"WEBP"
    assert preview_data(payload, "3") == {"node_id": "12", "content_type": "image/webp",
                                          "data_base64": base64.b64encode(b"WEBP").decode()}
    bare = json.dumps({}).encode()
    assert preview_data(struct.pack(">II", 4, len(bare)) + bare + b"PNG", None) == {
        "node_id": "", "content_type": "image/png", "data_base64": base64.b64encode(b"PNG").decode()}


@pytest.mark.parametrize("payload", [
    b"", b"\x00\x00\x00\x01", struct.pack(">II", 1, 1),  # cut short, or no image
    struct.pack(">II", 1, 9) + b"IMAGE",  # a format ComfyUI does not have
    struct.pack(">I", 3) + struct.pack(">I", 1) + b"3" + b"text",  # a node's progress text
    struct.pack(">II", 4, 50) + b"{}",  # metadata longer than the frame
    struct.pack(">II", 4, 2) + b"[]IMAGE", struct.pack(">II", 4, 2) + b"{xIMAGE",  # metadata not an object
])
def test_other_binary_frames_are_no_preview(payload):
    assert preview_data(payload, "3") is None


def test_a_stream_starts_with_a_status_snapshot_and_then_follows_the_job():
    stream = EventStream(keepalive_s=15)
    assert decoded(stream.on_job(job("queued", queue_position=2), 0.0)) == [
        ("status", {"status": "queued", "queue_position": 2})]
    assert stream.on_job(job("queued", queue_position=2), 0.1) == []  # nothing new
    assert decoded(stream.on_job(job("running", progress=progress(0.1)), 0.2)) == [
        ("status", {"status": "running"}), ("progress", progress(0.1))]
    assert decoded(stream.on_job(job("running", progress=progress(0.5), outputs=("a.png",)), 1.0)) == [
        ("progress", progress(0.5)), ("output", {"id": "a.png", "name": "a.png"})]
    ending = stream.on_job(job("succeeded", progress=progress(1.0), outputs=("a.png", "b.png")), 2.0)
    assert decoded(ending) == [("output", {"id": "b.png", "name": "b.png"}), ("status", {"status": "succeeded"})]
    assert stream.ended
    assert stream.on_job(job("succeeded"), 3.0) == [] and stream.on_time(100.0) == []
    assert stream.on_preview({"node_id": "3"}, 4.0) == []


def test_a_stream_on_a_finished_job_sends_its_outputs_then_its_terminal_status():
    stream = EventStream(keepalive_s=15)
    assert decoded(stream.on_job(job("failed", progress=progress(0.4), outputs=("a.png",)), 0.0)) == [
        ("output", {"id": "a.png", "name": "a.png"}), ("status", {"status": "failed"})]
    assert stream.ended


def test_progress_is_throttled_and_the_latest_held_back_goes_when_its_time_comes():
    stream = EventStream(keepalive_s=15)
    stream.on_job(job("running", progress=progress(0.1)), 0.0)
    assert stream.on_job(job("running", progress=progress(0.2)), 0.1) == []
    assert stream.on_job(job("running", progress=progress(0.3)), 0.2) == []
    assert stream.wait_s(0.2) == pytest.approx(THROTTLE_S - 0.2)
    assert stream.on_time(0.3) == []
    assert decoded(stream.on_time(THROTTLE_S)) == [("progress", progress(0.3))]  # the latest, not every one
    assert stream.wait_s(THROTTLE_S) == pytest.approx(15)  # nothing held: the next keepalive
    assert decoded(stream.on_job(job("running", progress=progress(0.4)), 2 * THROTTLE_S)) == [
        ("progress", progress(0.4))]


def test_previews_are_throttled_apart_from_progress():
    stream = EventStream(keepalive_s=15)
    stream.on_job(job("running"), 0.0)
    assert decoded(stream.on_preview({"node_id": "3", "n": 1}, 0.0)) == [("preview", {"node_id": "3", "n": 1})]
    assert stream.on_preview({"node_id": "3", "n": 2}, 0.1) == []
    assert stream.on_preview(None, 0.2) == []  # not a preview: nothing
    assert decoded(stream.on_job(job("running", progress=progress(0.2)), 0.2)) == [("progress", progress(0.2))]
    assert decoded(stream.on_time(THROTTLE_S)) == [("preview", {"node_id": "3", "n": 2})]


def test_a_flood_of_previews_never_keeps_held_progress_waiting():
    stream = EventStream(keepalive_s=15)
    stream.on_job(job("running", progress=progress(0.1)), 0.0)
    stream.on_job(job("running", progress=progress(0.2)), 0.1)  # held back
    assert decoded(stream.on_preview({"n": 1}, 0.2)) == [("preview", {"n": 1})]
    assert stream.on_preview({"n": 2}, 0.3) == []  # held back
    assert decoded(stream.on_preview({"n": 3}, THROTTLE_S)) == [("progress", progress(0.2))]  # its time came
    assert decoded(stream.on_preview({"n": 4}, THROTTLE_S + 0.25)) == [("preview", {"n": 4})]  # the latest
    stream.on_job(job("running", progress=progress(0.3)), THROTTLE_S + 0.3)  # held back
    assert decoded(stream.on_preview(None, 2 * THROTTLE_S)) == [("progress", progress(0.3))]
    stream.on_job(job("running", progress=progress(0.4)), 2 * THROTTLE_S + 0.1)  # held, then the end
    assert decoded(stream.on_job(job("canceled"), 5.0)) == [("status", {"status": "canceled"})]


def test_a_quiet_stream_sends_a_keepalive_only_after_keepalive_s_without_a_frame():
    stream = EventStream(keepalive_s=15, last_sent=0.0)
    stream.on_job(job("queued"), 1.0)
    assert stream.wait_s(1.0) == pytest.approx(15)
    assert stream.on_time(15.9) == []
    assert stream.on_time(16.0) == [KEEPALIVE]
    assert stream.wait_s(16.0) == pytest.approx(15) and stream.wait_s(40.0) == 0.0


def test_a_throttle_lets_the_first_through_and_holds_the_latest():
    throttle = Throttled(interval_s=1.0)
    assert throttle.wake_at() == float("inf")
    assert throttle.offer(b"1", 5.0) == b"1"
    assert throttle.offer(b"2", 5.5) is None and throttle.offer(b"3", 5.6) is None
    assert throttle.wake_at() == 6.0 and throttle.due(5.9) is None
    assert throttle.due(6.0) == b"3" and throttle.due(7.5) is None


def test_a_key_holds_up_to_its_limit_of_streams_and_gets_them_back():
    slots = StreamSlots()
    assert slots.take("alice", 2) and slots.take("alice", 2)
    assert not slots.take("alice", 2)
    assert slots.take("carol", 2)  # another key's own count
    slots.give_back("alice")
    assert slots.take("alice", 2)
    for key in ("alice", "alice", "carol"):
        slots.give_back(key)
    assert not slots.held
