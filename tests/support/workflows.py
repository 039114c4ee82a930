"""Workflow parameters and definitions the workflow tests share."""
from __future__ import annotations

from comfyart.workflows.definition import WorkflowDefinition
from comfyart.workflows.parameters import Parameter
from tests.support.graphs import text_to_image_graph

SEED_MAP = {"seed": Parameter(type="int", target="3.seed", min=0),
            "prompt": Parameter(type="string", target="6.text", required=True)}


def param(kind: str, target="3.seed", **extra) -> Parameter:
    return Parameter(type=kind, target=target, **extra)


def t2i(steps: int = 4, description: str = "") -> WorkflowDefinition:
    """``text_to_image_graph`` with its seed and prompt as parameters."""
    return WorkflowDefinition(graph=text_to_image_graph(steps=steps), params=SEED_MAP, description=description)
