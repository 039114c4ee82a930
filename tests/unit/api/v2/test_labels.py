"""Job labels and the list's filters (api.v2.labels): every rule the SDK documents, at and past its limit."""
from __future__ import annotations

import pytest

from comfyart.api.v2.labels import filters_from_query, filters_problem, label_problem, labels_problem, matches


@pytest.mark.parametrize("key", ["a", "A-z_0.9", "x" * 40, "client", "run.id", "-", "."])
def test_a_valid_key(key):
    assert label_problem(key, "v") is None


@pytest.mark.parametrize("key", ["", "x" * 41, "a b", "a/b", "ключ", "a:b", "a\n", 7, None])
def test_an_invalid_key_is_named(key):
    problem = label_problem(key, "v")
    assert problem is not None and repr(key) in problem and "\n" not in problem


@pytest.mark.parametrize("value", ["", "x" * 256, "é" * 128, "hello world", "emoji ✓", "\u200b", "a\u2065b",
                                   "\u00a0", "\u2029"])
def test_a_valid_value(value):
    assert label_problem("k", value) is None


@pytest.mark.parametrize("value", ["x" * 257, "é" * 129, "a\tb", "a\nb", "\x00", "\x1f", "\x7f", "\x85", "\x9f",
                                   "\u202a", "\u202e", "\u2066", "\u2069", 1, None, ["a"]])
def test_an_invalid_value_is_refused_naming_its_key(value):
    problem = label_problem("k", value)
    assert problem is not None and "'k'" in problem


def test_at_most_16_labels_and_only_an_object_of_them():
    assert labels_problem({f"k{i}": "v" for i in range(16)}) is None
    assert labels_problem({}) is None
    assert labels_problem({f"k{i}": "v" for i in range(17)}) == "metadata has 17 labels; at most 16 are allowed"
    assert labels_problem("a string") == "metadata must be an object of string labels"
    assert labels_problem({"ok": "v", "bad key": "v"}) is not None
    assert labels_problem({"ok": "v", "k": 5}) is not None


def test_at_most_3_filters_each_valid():
    assert filters_problem({"a": "1", "b": "2", "c": "3"}) is None
    assert filters_problem({"a": "1", "b": "2", "c": "3", "d": "4"}) == "4 metadata filters; at most 3 are allowed"
    assert filters_problem({"a": "\u202e"}) is not None
    assert filters_problem({"": "x"}) is not None


def test_filters_come_from_the_deep_object_query():
    query = [("limit", "5"), ("metadata[client]", "acme"), ("metadata[run.id]", "7"), ("cursor", "x"),
             ("metadata", "flat"), ("metadata[]", "")]
    assert filters_from_query(query) == {"client": "acme", "run.id": "7", "": ""}
    with pytest.raises(ValueError, match="given twice"):
        filters_from_query([("metadata[a]", "1"), ("metadata[a]", "2")])


def test_a_job_matches_when_its_labels_include_every_filter():
    labels = {"client": "acme", "batch": "7"}
    assert matches(labels, {}) and matches(labels, {"client": "acme"}) and matches(labels, labels)
    assert not matches(labels, {"client": "other"}) and not matches(labels, {"missing": "7"})
