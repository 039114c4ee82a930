"""Validating an API-format graph against ``/object_info``, with ComfyUI's answer shapes (PROTOCOL.md §3,
POST /prompt), so the ComfyUI-compatible front door can turn a bad prompt away before it is queued, as one ComfyUI
would. Pure functions.

``validate(graph, object_info)`` returns a ``Verdict``: ``error`` is ComfyUI's top-level error (None when at least
one output node is valid), ``node_errors`` is per node, and ``outputs`` lists the valid output nodes. Combo
choices that the pool cannot list (an input comfyart stores and delivers itself) are let through by
``also_allowed``. ``GraphRefused`` carries a refusal to a caller of comfyart's own API, with a one-line summary.

Where ComfyUI's answer comes from a node's own code, it is copied: a file input (LoadImage's ``image``) is checked by
the node, not against its list (``Invalid image file: NAME``, never the list of files, which holds other clients'
uploads), and a link to a missing node fails the node that links (a KeyError one level up, as in execution.py).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfyart.errors import PromptRejected

Error = dict[str, Any]
_CONVERT = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
LISTED_CHOICES = 20  # ComfyUI lists a combo's choices in an error up to this many
# a combo input whose node checks the file itself (VALIDATE_INPUTS): the upload flag, and the kind of file it names
FILE_UPLOADS = {"image_upload": "image", "audio_upload": "audio", "video_upload": "video"}
ANNOTATIONS = (" [input]", " [output]", " [temp]")  # ComfyUI's "name [output]": a file of another folder
SUMMARY_CHARS = 300
_GIANT_NUMBER = re.compile(r"\d{21,}")  # past 2^64: a number comfyart's one-line summary cuts short


def error_of(kind: str, message: str, details: str = "", extra: dict[str, Any] | None = None) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": _json_safe(extra or {})}


def _json_safe(value: Any) -> Any:
    """``value`` with each infinite or NaN float as its name (``"inf"``): strict JSON, as an answer is sent, has
    no such numbers, though a request body may (``1e999``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class Verdict:
    error: Error | None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def output_nodes(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    return [node_id for node_id, node in graph.items()
            if isinstance(node, dict) and object_info.get(str(node.get("class_type")), {}).get("output_node")]


def combo_options(spec: Sequence[Any]) -> list[Any] | None:
    """The choices of a combo input: ``[[a, b], {...}]``, or the v3 ``["COMBO", {"options": [...]}]``."""
    if spec and isinstance(spec[0], list):
        return spec[0]
    if spec and spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options", []))
    return None


class _NodeException(Exception):
    """An exception ComfyUI's validation code meets in a node (``exception_type`` as it names it): the node itself
    reports it when it is an output, else the node one level up."""

    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


class _KeyMissing(_NodeException):
    """A KeyError: a link to a node the graph lacks, a node without inputs."""

    def __init__(self, key: Any) -> None:
        super().__init__(repr(key), "KeyError")


def _lookup(inputs: Any, name: str) -> tuple[bool, Any]:
    """Whether ``inputs`` holds ``name``, and its value, as ComfyUI's ``x not in inputs`` / ``inputs[x]`` find them:
    ``inputs`` that is not an object (``3``, ``null``) raises the TypeError Python raises there."""
    try:
        return (True, inputs[name]) if name in inputs else (False, None)
    except TypeError as exc:
        raise _NodeException(str(exc), "TypeError") from None


def _upload_kind(options: Mapping[str, Any]) -> str | None:
    return next((kind for flag, kind in FILE_UPLOADS.items() if options.get(flag) is True), None)


def _elsewhere(value: Any) -> bool:
    """A file name the pool's lists cannot hold (in a subfolder, or of another folder): the backend checks it."""
    return isinstance(value, str) and ("/" in value or value.endswith(ANNOTATIONS))


def _short(number: Any) -> str:
    """A text with each giant number in it cut short (ComfyUI's messages quote them whole)."""
    return _GIANT_NUMBER.sub(lambda match: match.group(0)[:20] + "…", str(number))


class _Checker:
    def __init__(self, graph: Mapping[str, Any], object_info: Mapping[str, Any],
                 also_allowed: Callable[[Any], bool]) -> None:
        self.graph = graph
        self.info = object_info
        self.also_allowed = also_allowed
        self.results: dict[str, list[Error]] = {}
        self.valid: dict[str, bool] = {}

    def check(self, node_id: str) -> bool:
        if node_id in self.valid:
            return self.valid[node_id]
        self.valid[node_id] = True  # a cycle is not this node's own error; ComfyUI reports it at run time
        node = self.graph[node_id]
        if "inputs" not in node:
            raise _KeyMissing("inputs")
        spec = self.info[node["class_type"]].get("input", {})
        inputs = node["inputs"]
        errors: list[Error] = []
        upstream_ok = True
        for name, config in (spec.get("required") or {}).items():
            present, value = _lookup(inputs, name)
            if not present:
                errors.append(error_of("required_input_missing", "Required input is missing", name,
                                     {"input_name": name}))
                continue
            upstream_ok &= self._input(name, config, value, errors)
        for name, config in (spec.get("optional") or {}).items():
            present, value = _lookup(inputs, name)
            if present:
                upstream_ok &= self._input(name, config, value, errors)
        if errors:
            self.results[node_id] = errors
        self.valid[node_id] = not errors and upstream_ok
        return self.valid[node_id]

    def _input(self, name: str, config: Any, value: Any, errors: list[Error]) -> bool:
        """Check one input; returns whether what it links to is valid (its own problems go to ``errors``)."""
        config = config if isinstance(config, list) and config else ["*"]
        input_type = config[0]
        options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
        shown = [input_type, options]
        if isinstance(value, list):
            if len(value) != 2 or not isinstance(value[1], int):
                errors.append(error_of("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                     "[node_id, slot_index]", name,
                                     {"input_name": name, "input_config": shown, "received_value": value}))
                return True
            upstream = str(value[0])
            if upstream not in self.graph:
                raise _KeyMissing(value[0])
            produced = self.info[self.graph[upstream]["class_type"]].get("output") or []
            received = produced[value[1]] if 0 <= value[1] < len(produced) else None
            if (isinstance(input_type, str) and isinstance(received, str) and "*" not in (received, input_type)
                    and not set(received.split(",")) & set(input_type.split(","))):
                errors.append(error_of("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, received_type({received}) mismatch input_type({input_type})",
                                     {"input_name": name, "input_config": shown, "received_type": received,
                                      "linked_node": value}))
                return True
            try:
                return self.check(upstream)
            except _NodeException as failed:  # e.g. the upstream node links to nowhere: filed under it, as in ComfyUI
                self.results[upstream] = [error_of("exception_during_inner_validation",
                                                 "Exception when validating inner node", str(failed),
                                                 {"input_name": name, "input_config": shown,
                                                  "exception_message": str(failed),
                                                  "exception_type": failed.exception_type,
                                                  "traceback": [], "linked_node": value})]
                self.valid[upstream] = False
                return False
        choices = combo_options(config)
        if choices is not None:
            self._choice(name, value, choices, options, errors)
            return True
        if input_type in _CONVERT:
            try:
                converted = _CONVERT[input_type](value)
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an infinite float
                errors.append(error_of("invalid_input_type",
                                     f"Failed to convert an input value to a {input_type} value",
                                     f"{name}, {value}, {exc}",
                                     {"input_name": name, "input_config": shown, "received_value": value,
                                      "exception_message": str(exc)}))
                return True
            if input_type in ("INT", "FLOAT"):
                if "min" in options and converted < options["min"]:
                    errors.append(error_of("value_smaller_than_min", f"Value {converted} smaller than min of "
                                         f"{options['min']}", name,
                                         {"input_name": name, "input_config": shown, "received_value": converted}))
                elif "max" in options and converted > options["max"]:
                    errors.append(error_of("value_bigger_than_max", f"Value {converted} bigger than max of "
                                         f"{options['max']}", name,
                                         {"input_name": name, "input_config": shown, "received_value": converted}))
        return True

    def _choice(self, name: str, value: Any, choices: list[Any], options: dict[str, Any],
                errors: list[Error]) -> None:
        """A combo's value: one of its choices, or a file its node finds (checked by the node, as ComfyUI does)."""
        upload = _upload_kind(options)
        if value in choices or self.also_allowed(value) or (upload is not None and _elsewhere(value)):
            return
        if upload is not None:
            errors.append(error_of("custom_validation_failed", "Custom validation failed for node",
                                 f"{name} - Invalid {upload} file: {value}", {"input_name": name}))
            return
        listed = str(choices) if len(choices) <= LISTED_CHOICES else f"(list of length {len(choices)})"
        errors.append(error_of("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                             {"input_name": name,
                              "input_config": [choices, options] if len(choices) <= LISTED_CHOICES else None,
                              "received_value": value}))

    def failing_upstream(self, output_id: str) -> list[str]:
        """Nodes reachable from ``output_id`` (itself included) that carry their own errors."""
        seen: list[str] = []
        stack = [output_id]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.append(node_id)
            node = self.graph.get(node_id)
            inputs = node.get("inputs") if isinstance(node, dict) else None
            for value in inputs.values() if isinstance(inputs, dict) else ():
                if isinstance(value, list) and len(value) == 2:
                    stack.append(str(value[0]))
        return [n for n in seen if self.results.get(n)]


def _output_valid(checker: _Checker, output_id: str) -> bool:
    try:
        return checker.check(output_id)
    except _NodeException as failed:  # e.g. the output node itself links to nowhere
        checker.results[output_id] = [error_of("exception_during_validation", "Exception when validating node",
                                             str(failed), {"exception_type": failed.exception_type,
                                                           "traceback": []})]
        checker.valid[output_id] = False
        return False


def validate(graph: Any, object_info: Mapping[str, Any], *, targets: Sequence[str] | None = None,
             also_allowed: Callable[[Any], bool] = lambda value: False) -> Verdict:
    if graph == []:  # ComfyUI walks it as a graph without nodes
        graph = {}
    if not isinstance(graph, dict):  # ComfyUI fails with a 500
        return Verdict(error_of("invalid_prompt", "Prompt must be an object of nodes"))
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return Verdict(error_of("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                  "property.", f"Node ID '#{node_id}'"))
        if node["class_type"] not in object_info:
            return Verdict(error_of("invalid_prompt", f"Cannot execute because node {node['class_type']} does not "
                                  "exist.", f"Node ID '#{node_id}'"))
    outputs = [n for n in output_nodes(graph, object_info) if targets is None or n in targets]
    if not outputs:
        return Verdict(error_of("prompt_no_outputs", "Prompt has no outputs"))
    checker = _Checker(graph, object_info, also_allowed)
    good = [output_id for output_id in outputs if _output_valid(checker, output_id)]
    node_errors: dict[str, Any] = {}
    reasons: list[str] = []
    for output_id in outputs:
        if output_id in good:
            continue
        reasons += [f"{e['message']}: {e['details']}" for e in checker.results.get(output_id, [])]
        for node_id in checker.failing_upstream(output_id):
            entry = node_errors.setdefault(node_id, {"errors": checker.results[node_id], "dependent_outputs": [],
                                                     "class_type": graph.get(node_id, {}).get("class_type")})
            entry["dependent_outputs"].append(output_id)
    if not good:
        return Verdict(error_of("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                              "\n".join(reasons)), node_errors)
    return Verdict(None, node_errors, good)



def summary(verdict: Verdict) -> str:
    """A refusal in one line, as comfyart's own API reports it: ComfyUI's message and each node's errors."""
    error = verdict.error or {}
    parts = [f"node {node_id} ({entry.get('class_type')}): {_reason(e)}"
             for node_id, entry in verdict.node_errors.items() for e in entry.get("errors", [])]
    text = str(error.get("message", "prompt refused"))
    if parts:
        text += ": " + "; ".join(parts)
    elif error.get("details"):
        text += f" ({error['details']})"
    text = _short(" ".join(text.split()))
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


def _reason(error: Mapping[str, Any]) -> str:
    """One node error in words. ComfyUI reports a link to a node the graph lacks as the KeyError it met
    (``Exception when validating node: '9'``); a person reads it better as what it is."""
    extra = error.get("extra_info") or {}
    if str(error.get("type", "")).startswith("exception_during") and extra.get("exception_type") == "KeyError":
        # (its input_name, when there is one, is the input of the node downstream that links here: not this one's)
        missing = str(error.get("details", "")).strip("'\"")
        if missing in ("inputs", "class_type"):  # the KeyError of a node without them, not of a link
            return f"the node has no '{missing}'"
        return f"an input links to node {missing}, which is not in the graph"
    return f"{error.get('message')}: {error.get('details')}"


class GraphRefused(PromptRejected):
    """A graph refused at submission by the fleet's ``/object_info``: ComfyUI's ``error`` and ``node_errors``, and
    a one-line message."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.error, verdict.node_errors)
        self.summary = summary(verdict)

    def __str__(self) -> str:
        return self.summary
