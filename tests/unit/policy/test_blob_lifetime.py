"""When the blob GC may remove a blob, and which upload temp files are leftovers (policy.assets): every
combination of a live asset, a claim's age around the grace, and a clock behind the file's."""
from __future__ import annotations

import itertools

import pytest

from comfyart.policy.assets import (
    BLOB_GRACE_MS,
    TMP_MAX_AGE_MS,
    blob_relpath,
    blob_removable,
    is_blob_digest,
    tmp_leftover,
)

NOW = 1_800_000_000_000
AGES = [-5_000, 0, 1, BLOB_GRACE_MS - 1, BLOB_GRACE_MS, BLOB_GRACE_MS + 1, 10 * BLOB_GRACE_MS]  # negative: future


@pytest.mark.parametrize(("referenced", "age_ms"), list(itertools.product([False, True], AGES)))
def test_a_blob_goes_only_when_no_asset_names_it_and_no_claim_is_within_the_grace(referenced: bool,
                                                                                  age_ms: int) -> None:
    removable = blob_removable(referenced=referenced, mtime_ms=NOW - age_ms, now_ms=NOW)
    assert removable is (not referenced and age_ms >= BLOB_GRACE_MS)


@pytest.mark.parametrize("grace_ms", [0, 1, 60_000])
def test_the_grace_is_a_parameter(grace_ms: int) -> None:
    assert blob_removable(referenced=False, mtime_ms=NOW - grace_ms, now_ms=NOW, grace_ms=grace_ms)
    assert not blob_removable(referenced=False, mtime_ms=NOW - grace_ms + 1, now_ms=NOW, grace_ms=grace_ms)
    assert not blob_removable(referenced=True, mtime_ms=0, now_ms=NOW, grace_ms=grace_ms)


@pytest.mark.parametrize("age_ms", [-5_000, 0, TMP_MAX_AGE_MS - 1, TMP_MAX_AGE_MS, TMP_MAX_AGE_MS + 1])
def test_an_upload_temp_file_is_a_leftover_once_untouched_for_an_hour(age_ms: int) -> None:
    assert tmp_leftover(mtime_ms=NOW - age_ms, now_ms=NOW) is (age_ms >= TMP_MAX_AGE_MS)
    assert tmp_leftover(mtime_ms=NOW - age_ms, now_ms=NOW, max_age_ms=0) is (age_ms >= 0)


@pytest.mark.parametrize(("name", "is_digest"), [
    ("ab" * 32, True), ("AB" * 32, False), ("ab" * 32 + ".part", False), ("ab" * 31, False),
    ("ab" * 32 + "\n", False), (".upload-x", False), ("", False)])
def test_only_a_digest_is_a_blob_of_the_gc(name: str, is_digest: bool) -> None:
    assert is_blob_digest(name) is is_digest
    if is_digest:
        assert blob_relpath(name).endswith("/" + name)
