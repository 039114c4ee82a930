"""Uploaded images: ``POST /api/inputs`` (one image kept for later runs), and the files and fields of a workflow
run sent as a form (``read_run``)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from comfyart.api.bodies import MULTIPART, SEND_JSON, media_type, run_sent_as_form
from comfyart.api.deps import ServicesDep
from comfyart.api.errors import BadRequest
from comfyart.api.limits import JSONTooDeep, parse_json
from comfyart.api.requests import RunOptions, json_body
from comfyart.config.sections import LimitsConfig
from comfyart.errors import InvalidInput
from comfyart.files.inputs import InputStore, NotAnImage, StoredInput, TooLarge

MAX_FORM_FILES = 16
UPLOAD_CHUNK = 1 << 20
FILE_SCHEMA = {"type": "string", "format": "binary"}
RUN_FORM = {"type": "object", "description": "one image file per image parameter, named after it",
            "properties": {"params": {"type": "string", "description": "the parameters: a JSON object"},
                           "priority": {"type": "string"}, "webhook": {"type": "string"}},
            "additionalProperties": FILE_SCHEMA}
INPUT_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"file": FILE_SCHEMA}, "required": ["file"]}}}}}

router = APIRouter()


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


async def store_upload(inputs: InputStore, upload: UploadFile, label: str) -> StoredInput:
    try:
        return await inputs.add(_chunks(upload))
    except NotAnImage as exc:
        raise BadRequest(415, f"{label}: {exc}") from None
    except TooLarge as exc:
        raise BadRequest(413, f"{label}: {exc}") from None


async def read_run(request: Request, inputs: InputStore,
                   limits: LimitsConfig) -> tuple[RunOptions, dict[str, StoredInput]]:
    """A run's options and uploaded files: JSON ``{"params": {...}, "priority": ...}``, or a form
    (multipart/form-data, or url-encoded when it has no files) with a ``params`` field holding that JSON object,
    one file per image parameter named after it, and optionally ``priority`` and ``webhook``. A url-encoded body
    that is JSON is JSON (``run_sent_as_form``)."""
    media = media_type(request.headers.get("content-type", ""))
    if not run_sent_as_form(media, b"" if media == MULTIPART else await request.body()):
        return RunOptions.of(await json_body(request, limits) if await request.body() else {}, limits), {}
    fields: dict[str, Any] = {}
    files: dict[str, StoredInput] = {}
    async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FILES) as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in files:
                    raise InvalidInput(f"params.{key}: more than one file")
                files[key] = await store_upload(inputs, value, f"params.{key}")
            elif key == "params":
                fields["params"] = _form_params(value, limits)
            elif key == "priority":
                fields["priority"] = int(value) if value.lstrip("-").isdigit() else value
            elif key == "webhook":
                fields["webhook"] = value
            else:
                raise InvalidInput(f"unknown form field {key!r} (body sent as {media}): send 'params' (JSON), "
                                   f"image files, priority, webhook; or {SEND_JSON}")
    return RunOptions.of(fields, limits), files


def _form_params(value: str, limits: LimitsConfig) -> Any:
    try:
        return parse_json(value, limits.max_json_depth)
    except JSONTooDeep as exc:
        raise InvalidInput(f"params: {exc}") from None
    except ValueError:
        raise BadRequest(400, "the 'params' form field is not valid JSON") from None


@router.post("/api/inputs", status_code=201, openapi_extra=INPUT_FORM)
async def upload_input(request: Request, services: ServicesDep) -> JSONResponse:
    """Store an image for later runs (multipart, one file); a parameter then takes ``{"input": ID}``."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(415, "send the image as multipart/form-data")
    async with request.form(max_files=1, max_fields=1) as form:
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if len(uploads) != 1:
            raise InvalidInput("send exactly one file")
        stored = await store_upload(services.inputs, uploads[0], "file")
    return JSONResponse({"input": stored.id, "size": stored.size, "content_type": stored.content_type},
                        status_code=201)
