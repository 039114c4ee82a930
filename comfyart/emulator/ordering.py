"""The order in which ComfyUI runs a prompt's nodes, reproduced so the emulator's ``executing`` frames come in
the same order as a real server's.

ComfyUI walks back from each output node with a stack (the last input is visited first), skipping inputs whose
output is cached; a node is ready once nothing it links from is pending. Among ready nodes, in the order they were
first reached, it prefers an output node, then a node that feeds an output directly, then one two links away,
then the first. (Real ComfyUI takes its output nodes from a hash-seeded set, so with several outputs the starting
order differs from run to run; the emulator uses prompt order.)
"""
from __future__ import annotations

from collections.abc import Callable


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))


class ExecutionOrder:
    def __init__(self, prompt: dict[str, dict], outputs: list[str], *, is_cached: Callable[[str], bool],
                 is_output: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.pending: dict[str, None] = {}  # insertion-ordered set
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, set[str]] = {}
        for output_id in outputs:
            self._add(output_id, is_cached)

    def _add(self, start: str, is_cached: Callable[[str], bool]) -> None:
        stack = [start]
        links = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count.setdefault(node_id, 0)
            self.blocking.setdefault(node_id, set())
            for value in self.prompt[node_id].get("inputs", {}).values():
                if _is_link(value):
                    upstream = str(value[0])
                    if not is_cached(upstream):
                        stack.append(upstream)
                        links.append((upstream, node_id))
        for upstream, downstream in links:
            if downstream not in self.blocking[upstream]:
                self.blocking[upstream].add(downstream)
                self.block_count[downstream] += 1

    def next(self) -> str | None:
        """The node to run next, or None when the prompt is done."""
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(self.is_output(c) for b in self.blocking[node_id] for c in self.blocking.get(b, ())):
                return node_id
        return ready[0]

    def finish(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
