"""Pictures on the wire: the binary preview frames a running node sends, and /view's re-encoded answers."""
from __future__ import annotations

import io
import json
import struct

from PIL import Image


def preview_frame(image: Image.Image, node_id: str, prompt_id: str, with_metadata: bool) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    if not with_metadata:
        return struct.pack(">II", 1, 2) + data
    metadata = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id, "image_type": "image/png"}).encode()
    return struct.pack(">II", 4, len(metadata)) + metadata + data


def reencode(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view's ``preview=jpeg|webp[;quality]`` and ``channel=rgb|a`` options."""
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A")
        image = Image.merge("RGBA", (alpha, alpha, alpha, alpha))
    buffer = io.BytesIO()
    if preview:
        kind, _, quality = preview.partition(";")
        fmt = "WEBP" if kind == "webp" else "JPEG"
        image.convert("RGB").save(buffer, format=fmt, quality=int(quality) if quality.isdigit() else 90)
        return buffer.getvalue(), f"image/{fmt.lower()}"
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"
