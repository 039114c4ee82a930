"""Task records as the store hands them out: a completed one, and its output files."""
from __future__ import annotations

from comfyart.models import OutputFile, Task, TaskStatus
from tests.support.graphs import invert_graph


def make_task(**fields) -> Task:
    """Task T1, completed (prompt p-1, number 4, client c, ``invert_graph()``), with ``fields`` changed."""
    base = {"id": "T1", "status": TaskStatus.COMPLETED, "created_ms": 1000, "updated_ms": 3000, "started_ms": 2000,
            "finished_ms": 3000, "comfy_prompt_id": "p-1", "number": 4.0, "prompt": invert_graph(),
            "extra_data": {"client_id": "c"}}
    return Task(**{**base, **fields})


def make_output(filename: str, node: str = "3", subfolder: str = "sub") -> OutputFile:
    return OutputFile(node_id=node, filename=filename, subfolder=subfolder, size=1, content_type="image/png",
                      sha256="0" * 64, path=f"T1/{filename}")
