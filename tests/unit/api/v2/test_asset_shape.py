"""The Asset answer (api.v2.assets.asset_body): what the SDK's model reads strictly (aware times, absolute url),
with and without an expiry, for a create answer and a read."""
from __future__ import annotations

import pytest
from comfy_low.models import Asset

from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.assets import asset_body, content_type_of, expires_in_of
from comfyart.store.assets import AssetRecord

NOW = 1_765_000_000_000
RECORD = AssetRecord("6f1c2b1e-8c1d-4e0a-9b9a-3b6b2f3c4d5e", "alice", "blake3:" + "ab" * 32, 12, "image/png",
                     "photo.png", NOW - 5000)


def test_an_asset_without_expiry():
    body = asset_body(RECORD, base="http://h:1/", created_new=True, now=NOW, url_ttl_s=60)
    Asset.model_validate(body)
    assert body == {"id": RECORD.id, "hash": RECORD.hash, "size_bytes": 12, "content_type": "image/png",
                    "file_path": "photo.png", "created_at": "2025-12-06T05:46:35.000+00:00",
                    "url": f"http://h:1/api/v2/assets/{RECORD.id}/content",
                    "url_expires_at": "2025-12-06T05:47:40.000+00:00", "expires_at": None, "created_new": True}


def test_an_expiring_asset_of_a_job_read_back():
    record = AssetRecord(RECORD.id, None, RECORD.hash, 1, "video/mp4", "a/b.mp4", NOW, NOW + 60_000, "job-1")
    body = asset_body(record, base="https://x", created_new=None, now=NOW, url_ttl_s=999)
    Asset.model_validate(body)
    assert "created_new" not in body and body["job_id"] == "job-1"
    assert body["expires_at"] == body["url_expires_at"] == "2025-12-06T05:47:40.000+00:00"


@pytest.mark.parametrize(("raw", "declared", "expected"), [
    ("image/png", None, "image/png"), (None, "image/webp", "image/webp"), (None, None, "application/octet-stream"),
    (" text/plain; charset=utf-8 ", "x/y", "text/plain; charset=utf-8")])
def test_the_content_type_is_the_part_then_the_files_own(raw, declared, expected):
    assert content_type_of(raw, declared) == expected


@pytest.mark.parametrize("raw", ["png", "a/" + "b" * 300, "image/\npng"])
def test_a_content_type_that_is_no_media_type_is_refused(raw):
    with pytest.raises(V2Refused, match="content_type"):
        content_type_of(raw, None)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("60", 60), (" 90 ", 90), (120, 120)])
def test_expires_in_is_whole_seconds(raw, expected):
    assert expires_in_of(raw) == expected


@pytest.mark.parametrize("raw", ["1.5", "-3", "", True, 2.0, "soon"])
def test_expires_in_of_another_kind_is_refused(raw):
    with pytest.raises(V2Refused, match="expires_in"):
        expires_in_of(raw)
