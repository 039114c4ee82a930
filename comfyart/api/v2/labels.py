"""Job metadata labels and the list's label filters, as the SDK documents the server's rules (API-V2.md §8): a key
is 1 to 40 characters of ``A-Z a-z 0-9 _ - .``; a value a string of at most 256 UTF-8 bytes without control or
bidirectional formatting characters; at most 16 labels on a job and 3 filters on a list. Each check answers the
reason a map is refused (one line, naming the key) or None. Pure."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MAX_LABELS = 16
MAX_FILTERS = 3
MAX_VALUE_BYTES = 256
KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")
# U+0000-U+001F (tab and newline included), U+007F-U+009F, the bidi embeddings/overrides and the isolates
FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
FILTER_PARAM = re.compile(r"metadata\[(.*)\]")


def key_problem(key: Any) -> str | None:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        return f"label key {key!r} must be 1 to 40 characters of A-Z a-z 0-9 _ - ."
    return None


def value_problem(key: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"label {key!r}: the value must be a string"
    if len(value.encode()) > MAX_VALUE_BYTES:
        return f"label {key!r}: the value is longer than {MAX_VALUE_BYTES} bytes in UTF-8"
    if FORBIDDEN_CHARS.search(value):
        return f"label {key!r}: the value holds a control or bidirectional formatting character"
    return None


def label_problem(key: Any, value: Any) -> str | None:
    """Why one label is refused, or None."""
    return key_problem(key) or value_problem(key, value)


def labels_problem(labels: Any) -> str | None:
    """Why a submitted ``metadata`` is refused (answered 422 ``metadata_invalid``), or None: an object of at most
    16 labels, each valid."""
    if not isinstance(labels, dict):
        return "metadata must be an object of string labels"
    if len(labels) > MAX_LABELS:
        return f"metadata has {len(labels)} labels; at most {MAX_LABELS} are allowed"
    return next((p for k, v in labels.items() if (p := label_problem(k, v))), None)


def filters_problem(filters: dict[str, str]) -> str | None:
    """Why the list's label filters are refused (answered 400 ``invalid_metadata_filter``), or None."""
    if len(filters) > MAX_FILTERS:
        return f"{len(filters)} metadata filters; at most {MAX_FILTERS} are allowed"
    return next((p for k, v in filters.items() if (p := label_problem(k, v))), None)


def filters_from_query(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The label filters of a list request's query (``metadata[key]=value``, the SDK's deepObject form); other
    parameters are left alone. A key given twice raises ValueError (two values cannot both match)."""
    filters: dict[str, str] = {}
    for name, value in params:
        match = FILTER_PARAM.fullmatch(name)
        if match is None:
            continue
        if match[1] in filters:
            raise ValueError(f"metadata filter {match[1]!r} is given twice")
        filters[match[1]] = value
    return filters


def matches(labels: dict[str, str], filters: dict[str, str]) -> bool:
    """Whether a job's labels include every filter pair."""
    return all(labels.get(k) == v for k, v in filters.items())
