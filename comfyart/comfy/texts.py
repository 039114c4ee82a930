"""The words a task draws, to tell tasks apart in a list: a workflow run's prompt parameter, or the text of a
raw graph's text-encoder nodes (those that feed a sampler's ``positive`` input first). Pure."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROMPT_PARAMETERS = ("prompt", "positive", "positive_prompt", "text")
# the text inputs of ComfyUI's encoders: CLIPTextEncode's, the SDXL one's pair, the Flux one's pair
TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "t5xxl", "prompt")
# what a primitive or string node that feeds an encoder's text holds its text in
SOURCE_INPUTS = ("text", "string", "value", "prompt")
MAX_CHARS = 300


def prompt_text(params: Mapping[str, Any] | None, graph: Mapping[str, Any] | None) -> str | None:
    """A workflow run's prompt parameter, else the text of its graph's encoders; None when neither has any."""
    for name in PROMPT_PARAMETERS:
        value = (params or {}).get(name)
        if isinstance(value, str) and value.strip():
            return clip(value.strip())
    return graph_text(graph) if graph else None


def graph_text(graph: Mapping[str, Any]) -> str | None:
    """The text of the graph's encoder nodes: of those wired to a ``positive`` input when there are any (the
    negative prompt says little about a picture), else of all of them; in node order, each once."""
    nodes = {str(node_id): node for node_id, node in graph.items() if isinstance(node, Mapping)}
    encoders = [node_id for node_id, node in nodes.items() if "TextEncode" in str(node.get("class_type", ""))]
    positive = {str(link[0]) for node in nodes.values() for name, link in _inputs(node).items()
                if name == "positive" and _is_link(link)}
    chosen = [node_id for node_id in encoders if node_id in positive] or encoders
    texts: list[str] = []
    for node_id in sorted(chosen, key=_node_order):
        for name in TEXT_INPUTS:
            text = _text_of(_inputs(nodes[node_id]).get(name), nodes)
            if text and text not in texts:
                texts.append(text)
    return clip(" / ".join(texts)) if texts else None


def clip(text: str) -> str:
    """One line of at most ``MAX_CHARS``: a list shows the start of a prompt, and the record keeps all of it."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_CHARS else line[:MAX_CHARS - 1].rstrip() + "…"


def _text_of(value: Any, nodes: Mapping[str, Mapping[str, Any]]) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if _is_link(value) and str(value[0]) in nodes:  # a text node feeding the encoder: one step back
        source = _inputs(nodes[str(value[0])])
        return next((v.strip() for name in SOURCE_INPUTS if isinstance(v := source.get(name), str) and v.strip()),
                    None)
    return None


def _inputs(node: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, Mapping) else {}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) \
        and isinstance(value[1], int)


def _node_order(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
