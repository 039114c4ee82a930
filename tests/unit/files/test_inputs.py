"""Uploaded inputs: the bytes decide what an upload is; a refused upload leaves nothing behind."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyart.files.inputs import InputStore, NotAnImage, TooLarge, sniff_image


@pytest.mark.parametrize("head, expected", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, ("image/png", ".png")),
    (b"\xff\xd8\xff\xe0" + b"\0" * 12, ("image/jpeg", ".jpg")),
    (b"RIFF\x10\0\0\0WEBPVP8 ", ("image/webp", ".webp")),
    (b"GIF89a" + b"\0" * 10, ("image/gif", ".gif")),
    (b"GIF87a", ("image/gif", ".gif")),
    (b"BM" + b"\0" * 14, ("image/bmp", ".bmp")),
    (b"II*\x00" + b"\0" * 12, ("image/tiff", ".tiff")),
    (b"MM\x00*" + b"\0" * 12, ("image/tiff", ".tiff")),
    (b"RIFF\x10\0\0\0WAVEfmt ", None),  # a RIFF that is not WEBP
    (b"<svg xmlns='http://www.w3.org/2000/svg'>", None),  # scripts can ride in SVG: not accepted
    (b"%PDF-1.7", None),
    (b"", None),
    (b"\x89PN", None),
])
def test_sniff_image(head, expected):
    assert sniff_image(head) == expected


async def chunks(*parts: bytes):
    for part in parts:
        yield part


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


async def test_inputs_are_stored_by_content(tmp_path: Path):
    store = InputStore(tmp_path)
    first = await store.add(chunks(PNG[:3], PNG[3:5], PNG[5:]))  # a signature split across chunks
    second = await store.add(chunks(PNG))
    assert first == second and first.size == len(PNG) and first.content_type == "image/png"
    assert first.id == hashlib.sha256(PNG).hexdigest() + ".png"
    assert store.path(first.id).read_bytes() == PNG
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [first.id]


@pytest.mark.parametrize("input_id", ["", "../x.png", "a" * 64 + ".exe", "A" * 64 + ".png", "a" * 63 + ".png",
                                      "/etc/passwd", "a" * 64 + ".png/../../x"])
def test_path_refuses_anything_but_an_input_id(tmp_path: Path, input_id):
    assert InputStore(tmp_path).path(input_id) is None


@pytest.mark.parametrize("parts, error", [
    ((b"hello, this is text and not an image",), NotAnImage),
    ((b"GIF",), NotAnImage),  # too short to be anything
    ((PNG, b"x" * 100), TooLarge),
])
async def test_refused_uploads_leave_nothing(tmp_path: Path, parts, error):
    store = InputStore(tmp_path)
    with pytest.raises(error):
        await store.add(chunks(*parts), limit=len(PNG) + 10)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
