"""Module and function sizes: no file of the package over MAX_LINES lines, no function over MAX_FUNCTION_LINES.
A file that grows past them holds a second noun that wants a module of its own.

    python3 scripts/sizes.py comfyart        # exits 1 and names each one over, 0 when none is
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n") + 1  # as the review hook counts: a final newline counts as a line
        if lines > MAX_LINES:
            found.append(f"{path}: {lines} lines (at most {MAX_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno}: {node.name} is {size} lines (at most {MAX_FUNCTION_LINES})")
    return found


def main() -> int:
    found = [line for root in sys.argv[1:] or ["comfyart"] for line in oversized(Path(root))]
    print("\n".join(found) or "sizes: every module and function within bounds")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
