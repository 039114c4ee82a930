"""The v2 API's assets (API-V2.md §6.6), pure: how a blob is named (``blake3:<hex>``) and where it lies, an asset's
``file_path`` checked, the name a backend's LoadImage will see, an asset's retention, and a ``Range`` header read
into the bytes to send (206), the whole body (200) or a refusal (416).

An asset is a record (uuid4 id, owner, file_path...) over a blob: the bytes, stored once per content whoever
uploaded them. The routes answer with these decisions; ``files.assets`` and ``store.assets`` act on them.
"""
from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from comfyart.policy.userdata import BadUserPath, user_path

HASH_PREFIX = "blake3:"
HEX_CHARS = 64  # a BLAKE3 digest's default 32 bytes, in hex
MIN_EXPIRES_IN_S = 60  # the contract's bounds of ``expires_in`` (seconds)
MAX_EXPIRES_IN_S = 604_800
_HEX = re.compile(r"[0-9a-f]{64}")  # whole strings only (fullmatch): "$" lets a newline end one
_EXTENSION = re.compile(r"\.[a-z0-9]{1,16}")
_RANGE = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits: "\d" takes any script's


class BadAssetHash(ValueError):
    """A hash that is not ``blake3:`` and 64 hex digits (422 ``invalid_request``); its message says so in one
    line."""


class BadFilePath(ValueError):
    """A ``file_path`` refused (422 ``invalid_request``); its message says why, in one line."""


class BadExpiry(ValueError):
    """An ``expires_in`` outside the contract's bounds (422 ``invalid_request``)."""


def blob_name(hex_digest: str) -> str:
    """The name a blob goes by on the wire: ``blake3:<hex>``."""
    return HASH_PREFIX + hex_digest


def blob_hex(name: str) -> str:
    """The hex digest of a blob's name ``blake3:<hex>`` (hex digits of either case; lower case returned), or
    BadAssetHash. Nothing else is accepted: no other algorithm, no bare hex, no padding."""
    algorithm, colon, digest = name.partition(":")
    if not colon or algorithm != HASH_PREFIX[:-1]:
        raise BadAssetHash("hash must be 'blake3:' followed by 64 hex digits")
    digest = digest.lower()
    if not _HEX.fullmatch(digest):
        raise BadAssetHash("hash must be 'blake3:' followed by 64 hex digits")
    return digest


def blob_relpath(hex_digest: str) -> str:
    """Where a blob lies below the blobs' directory: ``<hex[:2]>/<hex>`` (256 directories, none too big). Only
    for a digest ``blob_hex`` returned or a hasher made: anything else is ValueError, never a path outside."""
    hex_digest = _digest(hex_digest)
    return f"{hex_digest[:2]}/{hex_digest}"


def _digest(hex_digest: str) -> str:
    if not _HEX.fullmatch(hex_digest):
        raise ValueError(f"not a blob digest: {hex_digest!r}")
    return hex_digest


def asset_file_path(raw: str) -> str:
    """An asset's ``file_path`` (``photo.png``, ``masks/a.png``) as stored, or BadFilePath: the user manager's
    checks (``policy.userdata.user_path``: relative, no ``..``, no empty segment, no control character, NFC)."""
    try:
        return user_path(raw)
    except BadUserPath as exc:
        raise BadFilePath(f"file_path: {str(exc).removeprefix('Invalid path: ')}") from exc


def comfy_input_name(hex_digest: str, file_path: str) -> str:
    """The name a backend keeps an asset's bytes under, in its input directory: what a LoadImage (or any loader
    of inputs) of the submitted graph will see. It is the blob's digest, so two assets of the same bytes share one
    file on a backend, and two of the same ``file_path`` never overwrite each other; it keeps the file_path's
    extension (lower case, when it is a plain one), which some loaders read to tell a video from an image."""
    name = file_path.rpartition("/")[2]
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    return _digest(hex_digest) + (extension if _EXTENSION.fullmatch(extension) else "")


def expires_ms(now_ms: int, expires_in_s: int | None) -> int | None:
    """When an asset created at ``now_ms`` is gone: ``expires_in`` seconds later; None (never) without one.
    BadExpiry outside 60..604800 seconds."""
    if expires_in_s is None:
        return None
    if not MIN_EXPIRES_IN_S <= expires_in_s <= MAX_EXPIRES_IN_S:
        raise BadExpiry(f"expires_in must be between {MIN_EXPIRES_IN_S} and {MAX_EXPIRES_IN_S} seconds")
    return now_ms + expires_in_s * 1000


@dataclass(frozen=True)
class Unsatisfiable:
    """A range that starts past the end of a body of ``size`` bytes: 416, with ``Content-Range: bytes */size``."""

    size: int

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | Unsatisfiable:
    """The bytes a ``Range`` header asks of a body of ``size`` bytes (RFC 9110 §14), as ``(start, end)``
    inclusive (206), None for the whole body (200), or Unsatisfiable (416).

    One range only: ``bytes=a-b`` (``b`` past the end is the end), ``bytes=a-``, ``bytes=-n`` (the last ``n``
    bytes, all of them when ``n`` is more). A header the server may ignore is ignored (whole body, 200): none,
    another unit, bad syntax, ``a-b`` with ``b < a``, and several ranges (``bytes=0-1,5-6``: allowed by the RFC,
    simpler than a multipart/byteranges answer, and what a download resumed or read in parts never asks).
    Unsatisfiable: a start at or past the end, and a suffix of 0 bytes or of an empty body."""
    if header is None:
        return None
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec:
        return None
    found = _RANGE.fullmatch(spec.strip())
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first, last = found.group(1), found.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return Unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return Unsatisfiable(size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end


def content_range(start: int, end: int, size: int) -> str:
    """A 206 answer's ``Content-Range`` header for ``byte_range``'s ``(start, end)``."""
    return f"bytes {start}-{end}/{size}"


# ---------------------------------------------------------------------------------------------------- inputs
ASSET_TYPE = "core/ASSET"
MAX_PATH_CHARS = 1024  # a longer string of a graph is text, never an asset's file_path


@dataclass(frozen=True)
class GraphAssets:
    """What a submitted graph names of its owner's assets: the ids of its ``core/ASSET`` references (``None``
    for a malformed one), and the strings of its node inputs that could be an asset's ``file_path``."""

    ids: list[str | None]
    paths: list[str]


def _reference_id(value: dict[str, Any]) -> str | None:
    info = value.get("info")
    asset_id = info.get("id") if isinstance(info, dict) else None
    return asset_id if isinstance(asset_id, str) and asset_id else None


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type") == ASSET_TYPE


def _references(value: Any, found: list[str | None]) -> None:
    if _is_reference(value):
        found.append(_reference_id(value))
    elif isinstance(value, dict):
        for item in value.values():
            _references(item, found)
    elif isinstance(value, list):
        for item in value:
            _references(item, found)


def _could_be_path(value: str) -> bool:
    if len(value) > MAX_PATH_CHARS:
        return False
    try:
        return asset_file_path(value) == value
    except BadFilePath:
        return False


def graph_assets(workflow: Mapping[str, Any]) -> GraphAssets:
    """The asset references anywhere in the node inputs of an API-format graph, and its input strings that could
    be file paths (a node input's own value only: a link's node id is not a file)."""
    ids: list[str | None] = []
    paths: dict[str, None] = {}
    for node in workflow.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in inputs.values() if isinstance(inputs, dict) else ():
            if isinstance(value, str):
                if _could_be_path(value):
                    paths[value] = None
            else:
                _references(value, ids)
    return GraphAssets(ids, list(paths))


def missing_ids(ids: list[str | None], known: Container[str]) -> list[str | None]:
    """The references among ``ids`` that name no asset of the owner (None: a malformed one), in order, once each."""
    return list(dict.fromkeys(asset_id for asset_id in ids if asset_id is None or asset_id not in known))


def _substituted(value: Any, by_id: Mapping[str, str]) -> Any:
    if _is_reference(value):
        return by_id[_reference_id(value) or ""]
    if isinstance(value, dict):
        return {key: _substituted(item, by_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_substituted(item, by_id) for item in value]
    return value


def with_input_names(workflow: Mapping[str, Any], by_id: Mapping[str, str],
                     by_path: Mapping[str, str]) -> dict[str, Any]:
    """The graph with each asset reference replaced by the backend file name of its asset (``by_id``; every
    reference must be there: ``missing_ids`` first), and each input string that is one of the owner's
    ``file_path``s by the name of that asset (``by_path``). The graph given is not changed."""
    resolved: dict[str, Any] = {}
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            resolved[node_id] = node
            continue
        new_inputs = {name: by_path.get(value, value) if isinstance(value, str) else _substituted(value, by_id)
                      for name, value in inputs.items()}
        resolved[node_id] = {**node, "inputs": new_inputs}
    return resolved


def input_name_digest(value: str) -> str | None:
    """The blob digest of a backend file name ``comfy_input_name`` made (``<hex>`` or ``<hex>.<ext>``), or None
    for any other string: what the dispatcher delivers to a backend before the prompt that loads it."""
    digest, dot, extension = value.partition(".")
    if not _HEX.fullmatch(digest) or (dot and not _EXTENSION.fullmatch(dot + extension)):
        return None
    return digest


# ---------------------------------------------------------------------------------------------------- lifetime
BLOB_GRACE_MS = 3_600_000  # a blob written or claimed this recently is kept even with no asset (see blob_removable)
TMP_MAX_AGE_MS = 3_600_000  # an upload's temp file untouched this long is a leftover (a crash, a stalled client)


def blob_removable(*, referenced: bool, mtime_ms: int, now_ms: int, grace_ms: int = BLOB_GRACE_MS) -> bool:
    """Whether the blob GC may remove a blob: no live asset of any owner names it (``referenced``: read in Redis)
    and nobody has claimed it for ``grace_ms`` (its mtime: an upload writes or touches it, and so do ``from-hash``
    and a delivery to a backend, before they act on it). The grace covers the gap between such a claim and the
    asset record it leads to; a clock behind the file's (mtime in the future) keeps it."""
    return not referenced and mtime_ms <= now_ms - grace_ms


def tmp_leftover(*, mtime_ms: int, now_ms: int, max_age_ms: int = TMP_MAX_AGE_MS) -> bool:
    """Whether a file of ``assets/tmp`` is a leftover to remove: nothing has written it for ``max_age_ms`` (an
    upload in progress writes it with every chunk)."""
    return mtime_ms <= now_ms - max_age_ms


def is_blob_digest(name: str) -> bool:
    """Whether a file name below the blobs' directory is a blob's (anything else there is not the GC's)."""
    return _HEX.fullmatch(name) is not None
