"""Pictures on the wire: the binary preview frames a running node sends, and /view's re-encoded answers."""
from __future__ import annotations

import io
import json
import struct

from PIL import Image


def preview_frame(image: Image.Image, node_id: str, prompt_id: str, with_metadata: bool, jpeg: bool = False) -> bytes:
    """A PREVIEW_IMAGE frame (1: format code, image) or, for a socket that announced ``supports_preview_metadata``,
    PREVIEW_IMAGE_WITH_METADATA (4); a sampler's latent previews are JPEG, SaveImageWebsocket's PNG."""
    buffer = io.BytesIO()
    if jpeg:
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    if not with_metadata:
        return struct.pack(">II", 1, 1 if jpeg else 2) + data
    metadata = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id,
                           "image_type": "image/jpeg" if jpeg else "image/png"}).encode()
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
