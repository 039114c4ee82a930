"""Prompt validation with ComfyUI's error shapes (see shared/comfyui/PROTOCOL.md §3, POST /prompt).

``validate_prompt`` returns ``(ok, error, good_outputs, node_errors)`` exactly as the real server reports it,
and converts widget values in place (``"5"`` → ``5`` for an INT input), as ComfyUI does.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from comfyart.emulator.catalogue import SPECS, NodeSpec, model_choices

Error = dict[str, Any]
LISTED_CHOICES = 20  # ComfyUI lists a combo's choices in an error up to this many ("gigantic lists" are not sent)


def _error(kind: str, message: str, details: str = "", extra: dict | None = None) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


class Validator:
    def __init__(self, prompt: dict[str, Any], input_dir: str, models: Mapping[str, list[str]],
                 nodes: Mapping[str, NodeSpec]) -> None:
        self.prompt = prompt
        self.input_dir = input_dir
        self.models = models
        self.nodes = nodes
        self.results: dict[str, tuple[bool, list[Error], str]] = {}


    def validate(self, node_id: str) -> bool:
        if node_id in self.results:
            return self.results[node_id][0]
        node = self.prompt[node_id]
        spec = self.nodes[node["class_type"]]
        if "inputs" not in node:
            raise KeyError("inputs")
        inputs = node["inputs"]
        errors: list[Error] = []
        valid = True
        for name, config in {**spec.required, **spec.optional}.items():  # ComfyUI checks an optional one given
            if name not in inputs:
                if name in spec.required:
                    errors.append(_error("required_input_missing", "Required input is missing", name,
                                         {"input_name": name}))
                    valid = False
                continue
            value = inputs[name]
            input_type = config[0]
            info = config[1] if len(config) > 1 else None
            shown_config = [input_type, info] if info is not None else [input_type, {}]
            if isinstance(value, list):
                if not self._check_link(name, value, input_type, shown_config, errors):
                    valid = False
                continue
            problem = self._check_value(spec, name, input_type, info or {}, value, shown_config, inputs)
            if problem is not None:
                errors.append(problem)
                valid = False
        if errors:
            valid = False
        self.results[node_id] = (valid, errors, node_id)
        return valid

    def _check_link(self, name: str, value: list[Any], input_type: Any, shown_config: list[Any],
                    errors: list[Error]) -> bool:
        """A linked input, and the node it links to; False where either fails (its own problems go to ``errors``)."""
        if len(value) != 2:
            errors.append(_error("bad_linked_input",
                                 "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                 name, {"input_name": name, "input_config": shown_config,
                                        "received_value": value}))
            return False
        upstream_id = str(value[0])
        upstream_class = self.prompt[upstream_id]["class_type"]  # KeyError -> caller's inner failure
        outputs = self.nodes[upstream_class].outputs if upstream_class in self.nodes else ()
        slot = value[1]
        received = outputs[slot] if isinstance(slot, int) and 0 <= slot < len(outputs) else None
        if received is not None and "*" not in (received, input_type) and received != input_type:
            errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                 f"{name}, received_type({received}) mismatch input_type({input_type})",
                                 {"input_name": name, "input_config": shown_config,
                                  "received_type": received, "linked_node": value}))
            return False
        try:
            if not self.validate(upstream_id):
                return False
        except Exception as exc:  # an upstream lookup failed: filed under the upstream node
            reason = _error("exception_during_inner_validation", "Exception when validating inner node",
                            str(exc) if not isinstance(exc, KeyError) else repr(exc.args[0]),
                            {"input_name": name, "input_config": shown_config,
                             "exception_message": repr(exc.args[0]) if isinstance(exc, KeyError) else str(exc),
                             "exception_type": type(exc).__name__, "traceback": [],
                             "linked_node": value})
            self.results[upstream_id] = (False, [reason], upstream_id)
            return False
        return True

    def _check_value(self, spec: NodeSpec, name: str, input_type: Any, info: dict, value: Any,
                     shown_config: list, inputs: dict) -> Error | None:
        if spec.name == "LoadImage" and name == "image":
            if not isinstance(value, str) or not _inside(self.input_dir, value):
                return _error("custom_validation_failed", "Custom validation failed for node",
                              f"image - Invalid image file: {value}", {"input_name": name})
            return None
        converters = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
        if isinstance(input_type, str) and input_type in converters:
            try:
                value = converters[input_type](value)
            except (TypeError, ValueError, OverflowError) as exc:  # ComfyUI catches any: int(inf) overflows
                return _error("invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                              f"{name}, {value}, {exc}",
                              {"input_name": name, "input_config": shown_config, "received_value": value,
                               "exception_message": str(exc)})
            inputs[name] = value
            if "min" in info and value < info["min"]:
                return _error("value_smaller_than_min", f"Value {value} smaller than min of {info['min']}", name,
                              {"input_name": name, "input_config": shown_config, "received_value": value})
            if "max" in info and value > info["max"]:
                return _error("value_bigger_than_max", f"Value {value} bigger than max of {info['max']}", name,
                              {"input_name": name, "input_config": shown_config, "received_value": value})
            return None
        files = model_choices(spec.name, name, self.models)  # a loader's list, read now as ComfyUI reads it
        if isinstance(input_type, list) or files is not None:
            options = files if files is not None else input_type
            if value not in options:
                listed = len(options) <= LISTED_CHOICES
                shown = f"{name}: '{value}' not in {options if listed else f'(list of length {len(options)})'}"
                return _error("value_not_in_list", "Value not in list", shown,
                              {"input_name": name, "input_config": [options, info] if listed else None,
                               "received_value": value})
        return None


def _inside(base: str, relative: str) -> bool:
    path = os.path.abspath(os.path.join(base, relative))
    return os.path.commonpath([path, os.path.abspath(base)]) == os.path.abspath(base) and os.path.isfile(path)


def validate_prompt(prompt: Any, partial_targets: list[str] | None, input_dir: str, models: Mapping[str, list[str]],
                    nodes: Mapping[str, NodeSpec] = SPECS) -> tuple[bool, Error, list[str], dict[str, Any]]:
    """``nodes``: the node classes this server has (a class left out is refused as ComfyUI refuses an unknown one)."""
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                 f"Node ID '#{node_id}'"), [], {}
        if node["class_type"] not in nodes:
            return False, _error("invalid_prompt",
                                 f"Cannot execute because node {node['class_type']} does not exist.",
                                 f"Node ID '#{node_id}'"), [], {}
    outputs = [nid for nid, node in prompt.items() if nodes[node["class_type"]].output_node
               and (partial_targets is None or nid in partial_targets)]
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {}

    validator = Validator(prompt, input_dir, models, nodes)
    good: list[str] = []
    output_reasons: list[str] = []
    for output_id in outputs:
        try:
            ok = validator.validate(output_id)
        except Exception as exc:
            ok = False
            validator.results[output_id] = (False, [_error(
                "exception_during_validation", "Exception when validating node", str(exc),
                {"exception_type": type(exc).__name__, "traceback": []})], output_id)
        if ok:
            good.append(output_id)
        else:
            for reason in validator.results[output_id][1]:
                output_reasons.append(f"{reason['message']}: {reason['details']}")

    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        if output_id in good:
            continue
        for node_id in _failing_upstream(prompt, output_id, validator.results):
            entry = node_errors.setdefault(node_id, {
                "errors": validator.results[node_id][1], "dependent_outputs": [],
                "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(output_id)
    if not good:
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                             "\n".join(output_reasons)), [], node_errors
    return True, {}, good, node_errors


def _failing_upstream(prompt: dict[str, Any], output_id: str, results: dict[str, tuple]) -> list[str]:
    """Nodes reachable from ``output_id`` that carry their own validation errors."""
    seen: list[str] = []
    stack = [output_id]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.append(node_id)
        inputs = prompt.get(node_id, {}).get("inputs")
        for value in inputs.values() if isinstance(inputs, dict) else ():  # ComfyUI takes `"inputs": 3` too
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in results:
                stack.append(str(value[0]))
    return [n for n in seen if n in results and results[n][1]]
