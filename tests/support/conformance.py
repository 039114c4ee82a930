"""Compare transcripts recorded from the emulator with those recorded from real ComfyUI.

A transcript becomes a list of normalised lines: ids are renamed by order of first appearance, timestamps,
timings, tracebacks and byte counts are dropped, and each HTTP exchange keeps method, path, status,
content type and JSON body. ``python tests/support/conformance.py REAL.json EMULATED.json`` prints a unified diff.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
from typing import Any

ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"
                        r"|(?<=capture-client-)[0-9a-f]{8}|(?<=reconnect-)[0-9a-f]{8}|ComfyUI_temp_[a-z]{5}"
                        r"|not_an_image_[0-9a-f]{6}|proto_upload_[0-9a-f]{6}|proto_api_[0-9a-f]{6}")
DROPPED_KEYS = {"timestamp", "traceback", "exception_message", "current_inputs", "current_outputs", "number",
                "elapsed_ms", "t_ms", "response_body_len", "first_16_bytes_hex", "raw", "image_bytes_len",
                "length", "metadata_len", "python_version", "ram_total", "ram_free", "vram_total", "vram_free",
                "torch_vram_total", "torch_vram_free", "argv", "pytorch_version", "captured_at"}


class Normaliser:
    def __init__(self, *, unordered_outputs: bool = False) -> None:
        self.names: dict[str, str] = {}
        self.unordered_outputs = unordered_outputs

    def rename(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token not in self.names:
                self.names[token] = f"<id{len(self.names)}>"
            return self.names[token]
        return ID_PATTERN.sub(replace, text)

    def clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            cleaned = {self.rename(k): self.clean(v) for k, v in value.items() if k not in DROPPED_KEYS}
            if self.unordered_outputs and isinstance(cleaned.get("executed"), list):
                cleaned["executed"] = sorted(cleaned["executed"])  # ComfyUI builds this list from a set
            return cleaned
        if isinstance(value, list):
            if len(value) == 5 and isinstance(value[0], (int, float)) and isinstance(value[1], str):
                value = ["<number>"] + value[1:]  # a queue item: [number, prompt_id, prompt, extra, outputs]
                if self.unordered_outputs and isinstance(value[4], list):
                    value[4] = sorted(value[4])
            return [self.clean(v) for v in value]
        if isinstance(value, str):
            return self.rename(value)
        return value


def normalise(transcript: dict[str, Any], *, skip_paths: tuple = ("/object_info",),
              unordered_nodes: bool = False, progress_values: bool = True) -> list[str]:
    normaliser = Normaliser(unordered_outputs=unordered_nodes)
    lines: list[str] = []
    for event in transcript["events"]:
        kind = event["kind"]
        if kind == "http":
            path = normaliser.rename(event["path"])
            body: Any = event.get("response_json")
            if any(path.startswith(p) or path.startswith("/api" + p) for p in skip_paths):
                body = "<skipped>"
            content_type = event.get("response_headers", {}).get("Content-Type", "")
            lines.append(json.dumps(["http", event["method"], path, event["status"], content_type.split(";")[0],
                                     normaliser.clean(body)], sort_keys=True))
        elif kind == "ws_recv":
            if event.get("frame") == "text":
                frame = normaliser.clean(event["json"])
                if not progress_values and frame.get("type") == "progress":
                    frame["data"].pop("value", None)  # where an interrupt lands is a matter of timing
                lines.append(json.dumps(["ws", event["conn"], frame], sort_keys=True))
            else:
                keep = {k: event.get(k) for k in ("event_type", "image_type_code", "node_id", "text")}
                meta = event.get("metadata")
                if meta is not None:
                    keep["metadata"] = normaliser.clean(meta)
                lines.append(json.dumps(["ws-binary", event["conn"], keep], sort_keys=True))
        elif kind in ("ws_open", "ws_closed"):
            lines.append(json.dumps([kind, event["conn"]]))
    return _sort_node_blocks(lines) if unordered_nodes else lines


_NODE_FRAMES = ('"executing"', '"executed"', '"progress"', '"ws-binary"')


def _sort_node_blocks(lines: list[str]) -> list[str]:
    """Real ComfyUI starts from its output nodes in a hash-seeded order, so with several outputs the nodes of a
    prompt run in an order that changes between server runs. Here each node's frames (from its ``executing`` up
    to the next node) form a block, blocks are sorted, and the cumulative progress_state frames are dropped."""
    out: list[str] = []
    blocks: list[list[str]] = []

    def flush() -> None:
        out.extend(line for block in sorted(blocks) for line in block)
        blocks.clear()

    for line in lines:
        if '"progress_state"' in line:
            continue
        starts_block = '"executing"' in line and '"node": null' not in line
        if starts_block:
            blocks.append([line])
        elif blocks and any(tag in line for tag in _NODE_FRAMES) and '"node": null' not in line:
            blocks[-1].append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out


def by_channel(lines: list[str]) -> list[str]:
    """Each channel in its own order (HTTP first, then each socket): for scenarios where frames of different
    sockets, or a frame and an HTTP answer, race each other. Repeats of one HTTP poll count once: how often a
    client polled depends on how fast the server was."""
    def channel(line: str) -> str:
        kind, *rest = json.loads(line)
        return "" if kind == "http" else str(rest[0])
    ordered = sorted(lines, key=channel)
    return [line for i, line in enumerate(ordered)
            if i == 0 or line != ordered[i - 1] or not line.startswith('["http", "GET"')]


def diff(real: dict[str, Any], emulated: dict[str, Any], *, unordered_nodes: bool = False,
         per_channel: bool = False, progress_values: bool = True) -> list[str]:
    left = normalise(real, unordered_nodes=unordered_nodes, progress_values=progress_values)
    right = normalise(emulated, unordered_nodes=unordered_nodes, progress_values=progress_values)
    if per_channel:
        left, right = by_channel(left), by_channel(right)
    return list(difflib.unified_diff(left, right, "real", "emulated", lineterm="", n=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the differences between two ComfyUI transcripts, normalised.")
    parser.add_argument("real", help="a transcript recorded from real ComfyUI (JSON)")
    parser.add_argument("emulated", help="the same scenario recorded from the emulator or comfyart (JSON)")
    parser.add_argument("--unordered", action="store_true", help="ignore the start order of several output nodes")
    parser.add_argument("--per-channel", action="store_true", help="compare HTTP and each socket in its own order")
    args = parser.parse_args(argv)
    with open(args.real) as a, open(args.emulated) as b:
        print("\n".join(diff(json.load(a), json.load(b), unordered_nodes=args.unordered,
                              per_channel=args.per_channel)))


if __name__ == "__main__":
    main()
