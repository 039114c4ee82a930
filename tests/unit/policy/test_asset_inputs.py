"""Asset references and file paths in a submitted graph (policy.assets): found anywhere in node inputs, replaced by
the backend names of their assets, and a backend name read back into its blob digest."""
from __future__ import annotations

import pytest

from comfyart.policy.assets import GraphAssets, graph_assets, input_name_digest, missing_ids, with_input_names

ID = "6f1c2b1e-8c1d-4e0a-9b9a-3b6b2f3c4d5e"


def ref(asset_id: object = ID) -> dict:
    return {"__type": "core/ASSET", "info": {"id": asset_id, "hash": "blake3:00", "file_path": "photo.png"}}


GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": ref()}},
    "2": {"class_type": "Batch", "inputs": {"images": [ref("b"), {"nested": ref({"not": "a string"})}],
                                            "link": ["1", 0], "text": "a cat, photo.png", "file": "masks/m.png",
                                            "seed": 4}},
    "3": "not a node",
    "4": {"class_type": "NoInputs"},
}


def test_references_anywhere_and_plain_path_strings_are_found():
    assert graph_assets(GRAPH) == GraphAssets([ID, "b", None], ["a cat, photo.png", "masks/m.png"])
    assert graph_assets({"1": {"inputs": {"x": "../up.png", "y": "a" * 2000, "z": "/abs.png"}}}) == \
        GraphAssets([], [])
    assert graph_assets({"1": {"inputs": {"x": ref(""), "y": {"__type": "core/ASSET"}}}}).ids == [None, None]


def test_missing_ids_are_the_unknown_and_the_malformed_once_each():
    assert missing_ids([ID, "b", None, "b", None], {ID}) == ["b", None]
    assert missing_ids([ID], {ID}) == []


def test_references_and_paths_become_backend_names_and_nothing_else_changes():
    resolved = with_input_names(GRAPH | {"5": {"inputs": {"image": "masks/m.png", "other": "photo.png"}}},
                                {ID: "n1.png", "b": "n2.png", "": "n3"}, {"masks/m.png": "n4.png"})
    assert resolved["1"]["inputs"]["image"] == "n1.png"
    assert resolved["2"]["inputs"]["images"] == ["n2.png", {"nested": "n3"}]
    assert resolved["2"]["inputs"]["link"] == ["1", 0] and resolved["2"]["inputs"]["text"] == "a cat, photo.png"
    assert resolved["5"]["inputs"] == {"image": "n4.png", "other": "photo.png"}
    assert resolved["3"] == "not a node" and resolved["4"] == {"class_type": "NoInputs"}
    assert GRAPH["1"]["inputs"]["image"] == ref()  # the graph given is left as it was


@pytest.mark.parametrize(("name", "digest"), [
    ("ab" * 32, "ab" * 32), ("ab" * 32 + ".png", "ab" * 32), ("ab" * 32 + ".safetensors", "ab" * 32),
    ("AB" * 32 + ".png", None), ("ab" * 32 + ".PNG", None), ("ab" * 32 + ".", None), ("ab" * 31 + ".png", None),
    ("ab" * 32 + ".tar.gz", None), ("sub/" + "ab" * 32, None), ("ab" * 32 + "\n", None), ("", None)])
def test_a_backend_name_is_read_back_into_its_digest(name, digest):
    assert input_name_digest(name) == digest
