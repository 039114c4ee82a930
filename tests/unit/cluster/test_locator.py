"""Which replicas a file is asked of, in what order, and the one line when none gives it (issue 24)."""
from __future__ import annotations

from comfyart.api.peer import secret_matches
from comfyart.cluster.locator import candidates, unreachable
from comfyart.cluster.peers import peer_file_url

LIVE = {"a": "http://a:1", "b": "http://b:2", "c": "http://c:3", "me": "http://me:4"}


def test_an_output_is_asked_of_its_holder_only() -> None:
    assert candidates("outputs", "b", LIVE, "me") == [("b", "http://b:2")]
    assert candidates("outputs", "gone", LIVE, "me") == []
    assert candidates("outputs", "me", LIVE, "me") == []
    assert candidates("outputs", None, LIVE, "me") == []


def test_a_content_addressed_file_is_asked_of_its_holder_first_then_every_other_live_replica() -> None:
    assert candidates("inputs", "c", LIVE, "me") == [("c", "http://c:3"), ("a", "http://a:1"), ("b", "http://b:2")]
    assert candidates("blobs", "gone", LIVE, "me") == [("a", "http://a:1"), ("b", "http://b:2"), ("c", "http://c:3")]
    assert candidates("blobs", "me", {"me": "http://me:4"}, "me") == []


def test_the_one_line() -> None:
    assert unreachable("outputs", "t/x.png", "r0") == "output t/x.png is on replica r0, which is not reachable"
    assert unreachable("inputs", "ab.png", "r1") == "input ab.png is on replica r1, which is not reachable"
    assert unreachable("blobs", "cd", None) == "blob cd is on no replica that answers"


def test_the_secret_is_compared_whole_and_never_empty() -> None:
    assert secret_matches("s3cret", "s3cret")
    assert not secret_matches("s3cre", "s3cret")
    assert not secret_matches(None, "s3cret")
    assert not secret_matches("", "")
    assert not secret_matches("x", "")


def test_peer_urls_quote_the_name_but_keep_the_task_folder() -> None:
    assert peer_file_url("http://a:1/", "outputs", "t1/a picture#1.png") == \
        "http://a:1/api/cluster/peer/files/outputs/t1/a%20picture%231.png"
