"""Comfy API v2 assets (API-V2.md §6.6): upload (``POST /api/v2/assets``, multipart streamed to the blob store),
mint from a hash the caller already has (``from-hash``, ``HEAD by-hash``), read and delete. An asset is one key's
(auth off: one shared space); another's answers as a missing one, and so does its blob.

Decisions: an upload answers 201 ``created_new: true`` when it made an asset, 200 ``created_new: false`` when the
caller already had a live asset of the same bytes, file_path and content_type (another key's upload of the same
bytes is never told: its asset is new). ``tags`` and the Idempotency-Key are accepted and not kept (a repeated
upload is answered by the dedup). A DELETE always succeeds (204): a queued job that loads the asset then fails at
dispatch, saying the asset was deleted (no ``asset_in_use``: a running one already has its bytes). Blobs are never
removed (no garbage collection yet): a blob outlives its last asset."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from comfyart.api.auth import Caller
from comfyart.api.deps import Services, ServicesDep
from comfyart.api.requests import json_body
from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.jobs import base_url
from comfyart.api.v2.multipart import StreamedForm, file_chunks, refused
from comfyart.api.v2.shapes import asset_content_url, iso
from comfyart.clock import now_ms
from comfyart.files.assets import BlobStore, HashMismatch, PayloadTooLarge
from comfyart.policy.assets import BadAssetHash, BadExpiry, BadFilePath, asset_file_path, blob_hex, expires_ms
from comfyart.store.assets import AssetRecord, AssetStore

router = APIRouter()

MAX_CONTENT_TYPE_CHARS = 255


@contextmanager
def asset_errors() -> Iterator[None]:
    """The blob store's and the checks' refusals in the v2 envelope."""
    try:
        yield
    except PayloadTooLarge as exc:
        raise V2Refused("payload_too_large", str(exc), {"max_bytes": exc.max_bytes}) from None
    except HashMismatch as exc:
        raise V2Refused("hash_mismatch", str(exc), {"expected": exc.expected, "actual": exc.actual}) from None
    except (BadAssetHash, BadFilePath, BadExpiry) as exc:
        raise refused(str(exc)) from None


async def asset_stores(services: ServicesDep) -> tuple[BlobStore, AssetStore]:
    if services.blobs is None or services.assets is None:
        raise V2Refused("not_found", "this server keeps no assets")
    return services.blobs, services.assets


AssetStores = Annotated[tuple[BlobStore, AssetStore], Depends(asset_stores)]


def asset_body(record: AssetRecord, *, base: str, created_new: bool | None, now: int,
               url_ttl_s: int) -> dict[str, Any]:
    """An Asset (§5): aware timestamps, an absolute ``url``; ``url_expires_at`` when the asset expires, else a
    retention from now (the URL itself needs only the key: it has no expiry of its own)."""
    body: dict[str, Any] = {
        "id": record.id, "hash": record.hash, "size_bytes": record.size, "content_type": record.content_type,
        "file_path": record.file_path, "created_at": iso(record.created_ms),
        "url": asset_content_url(base, record.id),
        "url_expires_at": iso(record.expires_ms if record.expires_ms is not None else now + url_ttl_s * 1000),
        "expires_at": iso(record.expires_ms) if record.expires_ms is not None else None}
    if created_new is not None:
        body["created_new"] = created_new
    if record.job_id is not None:
        body["job_id"] = record.job_id
    return body


def asset_answer(record: AssetRecord, request: Request, services: Services, *,
                 created_new: bool | None = None) -> JSONResponse:
    body = asset_body(record, base=base_url(request, services), created_new=created_new, now=now_ms(),
                      url_ttl_s=services.api_v2.job_retention_s)
    return JSONResponse(body, status_code=201 if created_new else 200)


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if values is not None and len(values) > 1:
        raise refused(f"{name} given more than once")
    return values[0] if values else None


def expires_in_of(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise refused("expires_in must be a whole number of seconds")


def content_type_of(raw: str | None, declared: str | None) -> str:
    """The asset's content type: the ``content_type`` part, else the file part's own, else bytes."""
    value = (raw or declared or "application/octet-stream").strip()
    if len(value) > MAX_CONTENT_TYPE_CHARS or "/" not in value or any(ord(c) < 32 for c in value):
        raise refused("content_type must be a media type such as image/png")
    return value


@dataclass(frozen=True)
class UploadFields:
    file_path: str
    content_type: str
    expires_ms: int | None
    expected_hash: str | None


def upload_fields(form: StreamedForm, now: int) -> UploadFields:
    """The checked text parts of an upload (422 ``invalid_request`` for a bad one)."""
    raw_path = _one(form.fields, "file_path")
    if raw_path is None:
        raise refused("file_path is required")
    return UploadFields(asset_file_path(raw_path), content_type_of(_one(form.fields, "content_type"),
                                                                   form.file_content_type),
                        expires_ms(now, expires_in_of(_one(form.fields, "expires_in"))),
                        _one(form.fields, "expected_hash"))


@router.post("/api/v2/assets", response_model=None)
async def upload_asset(request: Request, principal: Caller, services: ServicesDep,
                       stores: AssetStores) -> JSONResponse:
    """Store an upload (parts ``file``, ``content_type``, ``file_path``, optional ``expected_hash``, ``tags``,
    ``expires_in``): its bytes go to disk as they arrive, hashed on the way."""
    blobs, assets = stores
    form = StreamedForm(request.headers.get("content-type", ""))
    now = now_ms()
    checked: list[UploadFields] = []

    def expected() -> str | None:  # asked once the body has ended (the form may name its fields after the
        checked.append(upload_fields(form, now))  # file), before the blob is installed: a refusal keeps nothing
        return checked[0].expected_hash

    with asset_errors():
        blob = await blobs.write_stream(file_chunks(form, request.stream()),
                                        max_bytes=services.api_v2.max_upload_bytes, expected_hash=expected)
    fields = checked[0]
    record, created_new = await assets.create(principal.owner, hash=blob.hash, size=blob.size,
                                              content_type=fields.content_type, file_path=fields.file_path,
                                              now_ms=now, expires_ms=fields.expires_ms)
    return asset_answer(record, request, services, created_new=created_new)


@router.post("/api/v2/assets/from-hash", response_model=None)
async def asset_from_hash(request: Request, principal: Caller, services: ServicesDep,
                          stores: AssetStores) -> JSONResponse:
    """A new asset of bytes the caller already has an asset of (``{"hash", "file_path"?, "expires_in"?}``):
    201, or 200 with the same one; 404 ``blob_not_found`` when the caller has none (another's blob included)."""
    blobs, assets = stores
    body = await json_body(request, services.security.limits)
    if not isinstance(body, dict) or not isinstance(body.get("hash"), str):
        raise refused("the body must be a JSON object with a string hash")
    now = now_ms()
    with asset_errors():
        hex_digest = blob_hex(body["hash"])
        raw_path = body.get("file_path")
        if raw_path is not None and not isinstance(raw_path, str):
            raise refused("file_path must be a string")
        expiry = expires_ms(now, expires_in_of(body.get("expires_in")))
        known = await assets.of_blob(principal.owner, hex_digest, now_ms=now)
        # claimed before the new record: the blob GC, which may have read no live asset of it, leaves it be
        # claimed here; held by another replica (its GC sees the new record), it is known from the file index
        if known is None or (await blobs.hold(hex_digest) is None and not await blobs.known(hex_digest)):
            raise V2Refused("blob_not_found", f"no blob {body['hash']}")
        file_path = asset_file_path(raw_path) if raw_path is not None else known.file_path
    record, created_new = await assets.create(principal.owner, hash=known.hash, size=known.size,
                                              content_type=known.content_type, file_path=file_path, now_ms=now,
                                              expires_ms=expiry)
    return asset_answer(record, request, services, created_new=created_new)


@router.head("/api/v2/assets/by-hash/{blob_hash}", response_model=None)
async def head_by_hash(blob_hash: str, principal: Caller, stores: AssetStores) -> Response:
    """200 when the caller may mint an asset of these bytes (``from-hash``), else 404; no body either way."""
    blobs, assets = stores
    try:
        hex_digest = blob_hex(blob_hash)
    except BadAssetHash:
        return Response(status_code=404)
    known = await assets.of_blob(principal.owner, hex_digest, now_ms=now_ms())
    mintable = known is not None and await blobs.known(hex_digest)
    return Response(status_code=200 if mintable else 404)


@router.get("/api/v2/assets/{asset_id}", response_model=None)
async def get_asset(asset_id: str, request: Request, principal: Caller, services: ServicesDep,
                    stores: AssetStores) -> JSONResponse:
    record = await stores[1].get(principal.owner, asset_id)
    if record is None:
        raise V2Refused("not_found", f"no asset {asset_id}")
    return asset_answer(record, request, services)


@router.delete("/api/v2/assets/{asset_id}", status_code=204, response_model=None)
async def delete_asset(asset_id: str, principal: Caller, stores: AssetStores) -> Response:
    """204; the asset is gone for good (its blob stays: another asset may share it)."""
    await stores[1].delete(principal.owner, asset_id)
    return Response(status_code=204)
