"""How a request's body is read whatever content type it declares: a JSON route's body parsed as JSON (or refused
naming the type it came as), and a workflow run told apart as a form or as JSON. Pure: bytes and headers in."""
from __future__ import annotations

from typing import Any

from comfyart.api.errors import BadRequest
from comfyart.api.limits import JSONTooDeep, parse_json
from comfyart.errors import InvalidInput

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
SEND_JSON = "send a JSON body with 'content-type: application/json'"


def media_type(content_type: str) -> str:
    """``multipart/form-data; boundary=x`` -> ``multipart/form-data``; no header -> ``""``."""
    return content_type.partition(";")[0].strip().lower()


def declares_json(media: str) -> bool:
    """A body sent as JSON: ``application/json``, a ``+json`` type, or sent with no type at all."""
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def parse_body(raw: bytes, content_type: str, max_depth: int) -> Any:
    """A JSON route's body, parsed whatever type it was declared as (except a multipart form, which is never JSON):
    ``curl -d`` sends ``application/x-www-form-urlencoded`` unless told otherwise, and a body that parses as JSON is
    what its sender meant. A body that does not parse is refused naming the type it came as: 400 when it was
    declared JSON, 415 otherwise (the type was the mistake)."""
    media = media_type(content_type)
    if media == MULTIPART:
        raise BadRequest(415, f"this route takes JSON, not {MULTIPART}: {SEND_JSON}")
    try:
        return parse_json(raw, max_depth)
    except JSONTooDeep as exc:
        raise InvalidInput(str(exc)) from None
    except ValueError:
        if declares_json(media):
            raise BadRequest(400, "body is not valid JSON") from None
        raise BadRequest(415, f"body sent as {media[:100]} is not JSON: {SEND_JSON}") from None


def run_sent_as_form(media: str, raw: bytes) -> bool:
    """Whether a workflow run's body is a form rather than JSON: a multipart one always; a url-encoded one unless it
    is a JSON object or array (``curl -d '{"params": ...}'`` labels JSON url-encoded; no form field's name starts
    with ``{`` or ``[``). ``raw`` is read only for a url-encoded body (a multipart one may be a large upload)."""
    if media == MULTIPART:
        return True
    return media == URLENCODED and raw.lstrip()[:1] not in (b"{", b"[")
