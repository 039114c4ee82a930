"""A ``multipart/form-data`` body read as it arrives (``POST /api/v2/assets``): the ``file`` part's bytes are
handed on chunk by chunk (to the blob store's temp file), never gathered; the other parts are small text fields,
each capped. Starlette's own form parser would spool the file to a temp file of its own first: twice the disk
writes, and the hashing only after the whole body is in."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from comfyart.api.v2.answers import V2Refused

FILE_PART = "file"
MAX_FIELD_BYTES = 64 << 10  # one text part (a file_path, a tag, a hash)
MAX_FIELDS = 256


def refused(message: str) -> V2Refused:
    """A malformed form: 422 ``invalid_request``, as the contract answers a bad multipart part."""
    return V2Refused("invalid_request", message, status=422)


class StreamedForm:
    """One form being parsed: ``feed`` each chunk of the body and take the file's bytes it returns; once the body
    has ended, ``finish`` and read ``fields`` (name -> values, in order), ``has_file``, ``file_content_type``."""

    def __init__(self, content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise refused("the body must be multipart/form-data with a boundary")
        self.fields: dict[str, list[str]] = {}
        self.has_file = False
        self.file_content_type: str | None = None
        self._field_count = 0
        self._pending: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._part: str | None = None  # the current part's name; FILE_PART for the file
        self._value = bytearray()
        callbacks: Any = {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_part, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._part_end}
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse ``chunk``; the file's bytes found in it (maybe none)."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise refused(f"malformed multipart body: {exc}") from None
        pending, self._pending = self._pending, []
        return pending

    def finish(self) -> None:
        self._parser.finalize()
        if self._part is not None:
            raise refused("the multipart body ended inside a part")

    # ------------------------------------------------------------------ the parser's callbacks
    def _part_begin(self) -> None:
        self._headers, self._value = {}, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise refused("a multipart part has no Content-Disposition: form-data name")
        self._part = name.decode("utf-8", "replace")
        if self._part == FILE_PART:
            if self.has_file:
                raise refused("more than one file part")
            self.has_file = True
            declared = self._headers.get(b"content-type")
            self.file_content_type = declared.decode("latin-1") if declared else None
        else:
            self._field_count += 1
            if self._field_count > MAX_FIELDS:
                raise refused(f"more than {MAX_FIELDS} form fields")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE_PART:
            self._pending.append(bytes(data[start:end]))
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise refused(f"form field {self._part} is larger than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._part is not None and self._part != FILE_PART:
            try:
                self.fields.setdefault(self._part, []).append(self._value.decode())
            except UnicodeDecodeError:
                raise refused(f"form field {self._part} is not UTF-8") from None
        self._part = None


async def file_chunks(form: StreamedForm, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The file part's bytes of ``body`` as they arrive; refused (422) once the body has ended without one."""
    async for chunk in body:
        for piece in form.feed(chunk):
            yield piece
    form.finish()
    if not form.has_file:
        raise refused("the form has no file part")
