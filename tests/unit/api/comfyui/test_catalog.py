"""What the ComfyUI-compatible API answers from its backends (api.comfyui.catalog): cached answers."""
from __future__ import annotations


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
