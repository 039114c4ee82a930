"""The Idempotency-Key rules: which keys are valid (every character, every length boundary) and what a stored
claim means."""
from __future__ import annotations

import uuid

import pytest

from comfyart.policy.idempotency import MAX_KEY_LENGTH, Held, held, job_value, pending_value, reuse_error, valid_key

PRINTABLE = [chr(code) for code in range(0x20, 0x7F)]
NOT_PRINTABLE = [chr(code) for code in range(0x20)] + ["\x7f", "\x80", "\xa0", "\xe9", "\u2028", "\u00ff",
                                                      "\u20ac", "\U0001f600", "\ufeff"]


@pytest.mark.parametrize("char", PRINTABLE)
def test_every_printable_ascii_character_is_allowed_alone_and_within_a_key(char):
    assert valid_key(char) is None
    assert valid_key(f"a{char}b") is None


@pytest.mark.parametrize("char", NOT_PRINTABLE)
def test_any_other_character_is_refused_wherever_it_is(char):
    for key in (char, f"{char}key", f"key{char}", f"ke{char}y"):
        reason = valid_key(key)
        assert reason is not None and "printable ASCII" in reason
        assert "\n" not in reason  # one line, even when the key held a newline
    assert "character 3 is" in (valid_key(f"ke{char}y") or "")


def test_every_character_code_below_256_is_decided_as_the_sdk_does():
    for code in range(256):
        assert (valid_key(chr(code)) is None) == (0x20 <= code <= 0x7E), code


@pytest.mark.parametrize("length, ok", [(0, False), (1, True), (2, True), (36, True), (254, True),
                                        (MAX_KEY_LENGTH, True), (256, False), (1000, False)])
def test_a_key_has_1_to_255_characters(length, ok):
    reason = valid_key("k" * length)
    assert (reason is None) == ok
    if length == 0:
        assert reason == "Idempotency-Key must not be empty"
    elif not ok:
        assert reason == f"Idempotency-Key is {length} characters long; at most 255 are allowed"


def test_a_uuid4_as_the_sdk_mints_is_valid():
    for _ in range(100):
        assert valid_key(str(uuid.uuid4())) is None


def test_stored_values_read_back():
    assert held(job_value("01HXYZ")) == Held(job_id="01HXYZ")
    assert held(pending_value("abc123")) == Held(job_id=None)
    assert held(pending_value("job:x")) == Held(job_id=None)  # a token never passes for a job
    for unknown in ("", "job:", "pending", "garbage", "JOB:x"):
        assert held(unknown) == Held(job_id=None)  # unknown forms refuse a reuse and name nothing


def test_a_reuse_names_the_job_only_when_one_was_made():
    named = reuse_error(Held(job_id="01J"))
    assert named["code"] == "idempotency_key_reuse"
    assert named["details"] == {"job_id": "01J"} and "01J" in named["message"]
    unknown = reuse_error(Held(job_id=None))
    assert unknown["code"] == "idempotency_key_reuse" and unknown["details"] is None
    assert "\n" not in unknown["message"] + named["message"]
