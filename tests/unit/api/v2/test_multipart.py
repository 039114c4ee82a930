"""The streamed multipart reader of uploads (api.v2.multipart): the file part's bytes come out as the body goes
in, whatever its chunking; text parts are read whole and capped; malformed forms are 422 invalid_request."""
from __future__ import annotations

import os

import pytest

from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.multipart import MAX_FIELD_BYTES, StreamedForm, file_chunks

BOUNDARY = "----b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, *, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def read(form: StreamedForm, data: bytes, step: int) -> bytes:
    out = b""
    for start in range(0, len(data), step):
        out += b"".join(form.feed(data[start:start + step]))
    form.finish()
    return out


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_the_file_streams_out_and_the_fields_are_read_whatever_the_chunking(step):
    data = os.urandom(50_000) + b"\r\n--" + BOUNDARY.encode()[:-1]  # a near-boundary inside the file
    raw = body(part("file_path", b"photo.png"), part("tags", b"a"),
               part("file", data, filename="p.png", content_type="image/png"), part("tags", "é".encode()),
               part("expected_hash", b"blake3:00"))
    form = StreamedForm(CONTENT_TYPE)
    assert read(form, raw, step) == data
    assert form.fields == {"file_path": ["photo.png"], "tags": ["a", "é"], "expected_hash": ["blake3:00"]}
    assert form.has_file and form.file_content_type == "image/png"


@pytest.mark.parametrize(("raw", "message"), [
    (body(part("file", b"1"), part("file", b"2")), "more than one file part"),
    (body(part("f", b"x" * (MAX_FIELD_BYTES + 1))), "form field f is larger than"),
    (body(part("f", b"\xff")), "form field f is not UTF-8"),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n", "no Content-Disposition"),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunfinished",
     "ended inside a part"),
    (b"garbage" * 10, "malformed multipart body"),
])
def test_malformed_forms_are_refused_with_a_reason(raw, message):
    form = StreamedForm(CONTENT_TYPE)
    with pytest.raises(V2Refused, match=message) as refused:
        read(form, raw, 1024)
    assert (refused.value.code, refused.value.status) == ("invalid_request", 422)


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data", "text/plain; boundary=x", ""])
def test_only_a_multipart_form_with_a_boundary_is_read(content_type):
    with pytest.raises(V2Refused, match="multipart/form-data with a boundary"):
        StreamedForm(content_type)


async def test_a_form_without_a_file_is_refused_once_it_ends():
    async def chunks():
        yield body(part("file_path", b"a.png"))

    with pytest.raises(V2Refused, match="no file part"):
        async for _ in file_chunks(StreamedForm(CONTENT_TYPE), chunks()):
            pass
