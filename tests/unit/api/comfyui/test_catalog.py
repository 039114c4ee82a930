"""What the ComfyUI-compatible API answers from its backends (api.comfyui.catalog): cached answers."""
from __future__ import annotations

import pytest


async def test_cached_answers_are_reused_and_bounded():
    from comfyart.api.comfyui.catalog import CACHED_ANSWERS, Catalog
    front = Catalog(pool=None, inventories=None)
    fetched = []

    def fetcher(key):
        async def fetch():
            fetched.append(key)
            return key
        return fetch

    assert await front._cached("a", 60, fetcher("a")) == "a"
    assert await front._cached("a", 60, fetcher("a")) == "a"
    assert fetched == ["a"]
    for i in range(CACHED_ANSWERS * 3):
        await front._cached(f"/models/{i}", 60, fetcher(i))
    assert len(front._cache) <= CACHED_ANSWERS
    assert await front._cached("expired", 0, fetcher("x")) == "x"
    assert await front._cached("expired", 0, fetcher("y")) == "y"  # a TTL of 0: fetched again


def test_backends_lists_are_answered_as_their_union():
    from comfyart.api.comfyui.catalog import union_of_answers
    assert union_of_answers([(200, ["a", "b"]), (200, ["b", "c"]), (404, {"error": "x"})]) == (200, ["a", "b", "c"])
    assert union_of_answers([(200, {"k": 1}), (200, {"k": 2})]) == (200, {"k": 1})  # not lists: the first
    assert union_of_answers([(404, {"e": 1})]) == (404, {"e": 1})
    assert union_of_answers([(404, None), (200, ["x"])]) == (200, ["x"])


def test_list_items_that_are_objects_count_once_by_name():
    from comfyart.api.comfyui.catalog import union_of_answers
    first = [{"name": "checkpoints", "folders": ["/a"]}, {"name": "loras", "folders": ["/a/l"]}]
    second = [{"name": "loras", "folders": ["/b/l"]}, {"name": "vae", "folders": ["/b/v"]}, ["odd"]]
    assert union_of_answers([(200, first), (200, second)]) == (200, [
        {"name": "checkpoints", "folders": ["/a"]}, {"name": "loras", "folders": ["/a/l"]},
        {"name": "vae", "folders": ["/b/v"]}])


def test_listed_by_names_the_backends_that_listed_each_item():
    from comfyart.api.comfyui.catalog import listed_by
    answers = [("b1", 200, ["/extensions/core/a.js", "/extensions/pack/x.js"]),
               ("b2", 200, ["/extensions/core/a.js"]), ("b3", 404, None), ("b4", 200, {"not": "a list"}),
               ("b2", 200, ["/extensions/core/a.js"])]
    assert listed_by(answers) == {"/extensions/core/a.js": ["b1", "b2"], "/extensions/pack/x.js": ["b1"]}
    assert listed_by([]) == {}


def test_objects_of_several_backends_merge_at_every_depth():
    from comfyart.api.comfyui.catalog import deep_merge, merge_objects
    en1 = {"en": {"nodeDefs": {"A": {"display_name": "A one"}}, "settings": {"s": 1}}}
    en2 = {"en": {"nodeDefs": {"A": {"display_name": "A two"}, "B": {"display_name": "B"}}},
           "fr": {"nodeDefs": {"B": {"display_name": "Bé"}}}}
    assert merge_objects([en1, en2]) == {
        "en": {"nodeDefs": {"A": {"display_name": "A one"}, "B": {"display_name": "B"}}, "settings": {"s": 1}},
        "fr": {"nodeDefs": {"B": {"display_name": "Bé"}}}}  # the first backend's word wins where both have one
    # workflow templates: each pack's names joined, a pack both have listed once
    assert merge_objects([{"pack": ["a", "b"]}, {"pack": ["b", "c"], "other": ["x"]}]) == {
        "pack": ["a", "b", "c"], "other": ["x"]}
    # list items that are objects count once when equal, whatever their key order
    assert merge_objects([{"Old": [{"new": "N", "v": 1}]}, {"Old": [{"v": 1, "new": "N"}, {"new": "M"}]}]) == {
        "Old": [{"new": "N", "v": 1}, {"new": "M"}]}
    assert merge_objects([]) == {} and merge_objects([["not"], None, "x"]) == {}
    assert merge_objects([{"k": [1]}, {"k": {"d": 1}}]) == {"k": [1]}  # a clash of kinds: the first's
    base = {"a": {"b": [1]}}
    deep_merge(base, {"a": {"b": [2], "c": 3}})
    assert base == {"a": {"b": [1]}}  # neither input changes


@pytest.mark.parametrize("header, takes", [
    ("gzip, deflate, br, zstd", True), ("GZIP", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("identity", False), ("", False), ("deflate, br", False),
    ("x-gzip", False),
])
def test_a_gzipped_answer_goes_to_a_client_that_takes_gzip(header: str, takes: bool):
    from comfyart.api.comfyui.routes import accepts_gzip

    assert accepts_gzip(header) is takes


def test_an_encoded_document_is_what_a_json_response_writes_and_its_gzip():
    import gzip

    from starlette.responses import JSONResponse

    from comfyart.api.comfyui.catalog import encode_document

    document = {"KSampler": {"input": {"required": {"seed": ["INT", {"max": 2**64 - 1}]}}, "name": "Échantillon"}}
    encoded = encode_document(document)
    assert encoded.json == JSONResponse(document).body
    assert gzip.decompress(encoded.gzip) == encoded.json
