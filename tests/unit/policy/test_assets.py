"""The v2 assets' pure rules (policy.assets): blob names and where blobs lie, file_path checks, the name a backend
sees, retention, and Range headers, the last against an independent model over every small body and range."""
from __future__ import annotations

import pytest

from comfyart.policy.assets import (
    BadAssetHash,
    BadExpiry,
    BadFilePath,
    Unsatisfiable,
    asset_file_path,
    blob_hex,
    blob_name,
    blob_relpath,
    byte_range,
    comfy_input_name,
    content_range,
    expires_ms,
)

HEX = "0123456789abcdef" * 4


def test_a_blob_name_round_trips_and_is_lower_case() -> None:
    assert blob_name(HEX) == "blake3:" + HEX
    assert blob_hex(blob_name(HEX)) == HEX
    assert blob_hex("blake3:" + HEX.upper()) == HEX


@pytest.mark.parametrize("name", [
    pytest.param(HEX, id="bare hex"),
    pytest.param("sha256:" + HEX, id="another algorithm"),
    pytest.param("BLAKE3:" + HEX, id="algorithm in capitals"),
    pytest.param("blake3:" + HEX[:-1], id="short"),
    pytest.param("blake3:" + HEX + "0", id="long"),
    pytest.param("blake3:" + HEX[:-1] + "g", id="not hex"),
    pytest.param("blake3:" + HEX + "\n", id="a newline after"),
    pytest.param(" blake3:" + HEX, id="a space before"),
    pytest.param("blake3:../" + HEX[3:], id="a path"),
    pytest.param("", id="empty"),
])
def test_anything_but_blake3_and_64_hex_digits_is_refused(name: str) -> None:
    with pytest.raises(BadAssetHash, match="^hash must be 'blake3:' followed by 64 hex digits$"):
        blob_hex(name)


def test_a_blob_lies_in_the_directory_of_its_first_two_digits() -> None:
    assert blob_relpath(HEX) == "01/" + HEX


@pytest.mark.parametrize("digest", ["../" + HEX[3:], HEX.upper(), HEX + "\n", "", "ab"])
def test_only_a_digest_has_a_blob_path(digest: str) -> None:
    with pytest.raises(ValueError, match="not a blob digest"):
        blob_relpath(digest)


@pytest.mark.parametrize("raw, stored", [
    ("photo.png", "photo.png"),
    ("masks/a b.png", "masks/a b.png"),
    ("models/checkpoints/x.safetensors", "models/checkpoints/x.safetensors"),
    ("caf\u0065\u0301.png", "caf\u00e9.png"),
])
def test_a_file_path_is_kept_as_given(raw: str, stored: str) -> None:
    assert asset_file_path(raw) == stored


@pytest.mark.parametrize("raw, why", [
    ("", "file_path: empty"),
    ("/etc/passwd", "file_path: absolute paths are not allowed"),
    ("C:photo.png", "file_path: absolute paths are not allowed"),
    ("../photo.png", "file_path: '..' segment is not allowed"),
    ("a//b.png", "file_path: an empty segment is not allowed"),
    ("a\\b.png", "file_path: backslashes are not allowed"),
    ("a\x00.png", "file_path: control characters are not allowed"),
    ("x" * 256, "file_path: a name longer than 255 bytes"),
])
def test_a_file_path_that_could_leave_its_place_is_refused_in_one_line(raw: str, why: str) -> None:
    with pytest.raises(BadFilePath) as refused:
        asset_file_path(raw)
    assert str(refused.value) == why


@pytest.mark.parametrize("file_path, name", [
    ("photo.png", HEX + ".png"),
    ("dir/clip.MP4", HEX + ".mp4"),
    ("noextension", HEX),
    (".hidden", HEX),
    ("archive.tar.gz", HEX + ".gz"),
    ("odd.p g", HEX),
    ("dots.", HEX),
    ("long." + "x" * 17, HEX),
])
def test_a_backend_keeps_an_asset_under_its_digest_and_plain_extension(file_path: str, name: str) -> None:
    assert comfy_input_name(HEX, file_path) == name


def test_retention_is_bounded_as_the_contract_says() -> None:
    assert expires_ms(1_000, None) is None
    assert expires_ms(1_000, 60) == 61_000
    assert expires_ms(1_000, 604_800) == 1_000 + 604_800_000
    for refused in (59, 604_801, 0, -60):
        with pytest.raises(BadExpiry, match="^expires_in must be between 60 and 604800 seconds$"):
            expires_ms(1_000, refused)


# ---------------------------------------------------------------------------------------------------- Range
def _model(spec: str, size: int) -> tuple[int, int] | None | Unsatisfiable:
    """What RFC 9110 says of one well-formed range ``first-last``, ``first-`` or ``-suffix``, from the positions it
    selects rather than from arithmetic on the bounds."""
    first, _, last = spec.partition("-")
    if first and last and int(last) < int(first):
        return None  # invalid: ignored
    if not first:
        positions = list(range(size))[-int(last):] if int(last) > 0 else []
    else:
        positions = [i for i in range(size) if i >= int(first) and (not last or i <= int(last))]
    if not positions:
        return Unsatisfiable(size)
    return positions[0], positions[-1]


SMALL = range(0, 9)


@pytest.mark.parametrize("size", range(0, 7))
def test_every_single_range_over_small_bodies_agrees_with_the_rfc(size: int) -> None:
    specs = [f"{a}-{b}" for a in SMALL for b in SMALL] + [f"{a}-" for a in SMALL] + [f"-{n}" for n in SMALL]
    for spec in specs:
        assert byte_range(f"bytes={spec}", size) == _model(spec, size), spec


@pytest.mark.parametrize("header, answer", [
    pytest.param(None, None, id="no header: 200"),
    pytest.param("bytes=0-0", (0, 0), id="first byte"),
    pytest.param("bytes=5-", (5, 9), id="open end"),
    pytest.param("bytes=-3", (7, 9), id="suffix"),
    pytest.param("bytes=-30", (0, 9), id="suffix longer than the body"),
    pytest.param("bytes=3-300", (3, 9), id="end past the end"),
    pytest.param("Bytes=1-2", (1, 2), id="unit in any case"),
    pytest.param(" bytes = 1-2 ", (1, 2), id="spaces around"),
    pytest.param("bytes=10-", Unsatisfiable(10), id="start at the end: 416"),
    pytest.param("bytes=10-20", Unsatisfiable(10), id="past the end: 416"),
    pytest.param("bytes=-0", Unsatisfiable(10), id="empty suffix: 416"),
    pytest.param("bytes=0-1,4-5", None, id="several ranges: whole body"),
    pytest.param("bytes=0-1,", None, id="a trailing comma: whole body"),
    pytest.param("bytes=5-4", None, id="reversed: ignored"),
    pytest.param("bytes=-", None, id="no bounds"),
    pytest.param("bytes=", None, id="no spec"),
    pytest.param("bytes", None, id="no equals sign"),
    pytest.param("items=0-1", None, id="another unit"),
    pytest.param("bytes=a-b", None, id="letters"),
    pytest.param("bytes=1-2-3", None, id="three parts"),
    pytest.param("bytes=+1-2", None, id="a sign"),
    pytest.param("bytes=0x1-2", None, id="hex"),
    pytest.param("bytes=\u0661-\u0662", None, id="digits of another script"),
    pytest.param("bytes=1 - 2", None, id="spaces inside"),
])
def test_range_headers_of_a_ten_byte_body(header: str | None, answer: object) -> None:
    assert byte_range(header, 10) == answer


def test_range_answer_headers() -> None:
    assert content_range(2, 5, 10) == "bytes 2-5/10"
    assert Unsatisfiable(10).content_range == "bytes */10"
    assert byte_range("bytes=-1", 0) == Unsatisfiable(0)
    big = 10 ** 30  # Python's ints do not overflow: a huge bound is past the end, not an error
    assert byte_range(f"bytes=0-{big}", 10) == (0, 9)
    assert byte_range(f"bytes={big}-", 10) == Unsatisfiable(10)
