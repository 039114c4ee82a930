"""Compare transcripts recorded from the emulator with those recorded from real ComfyUI.

A transcript becomes a list of normalised lines: ids are renamed by order of first appearance, timestamps,
timings, tracebacks and byte counts are dropped, and each HTTP exchange keeps method, path, status,
content type and JSON body. ``python tests/conformance.py REAL.json EMULATED.json`` prints a unified diff.
"""
from __future__ import annotations

import difflib
import json
import re
import sys
from typing import Any, Dict, List

ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"
                        r"|(?<=capture-client-)[0-9a-f]{8}|(?<=reconnect-)[0-9a-f]{8}|ComfyUI_temp_[a-z]{5}"
                        r"|not_an_image_[0-9a-f]{6}|proto_upload_[0-9]+")
DROPPED_KEYS = {"timestamp", "traceback", "exception_message", "current_inputs", "current_outputs", "number",
                "elapsed_ms", "t_ms", "response_body_len", "first_16_bytes_hex", "raw", "image_bytes_len",
                "length", "metadata_len", "python_version", "ram_total", "ram_free", "vram_total", "vram_free",
                "torch_vram_total", "torch_vram_free", "argv", "pytorch_version", "captured_at"}


class Normaliser:
    def __init__(self) -> None:
        self.names: Dict[str, str] = {}

    def rename(self, text: str) -> str:
        def replace(match: "re.Match[str]") -> str:
            token = match.group(0)
            if token not in self.names:
                self.names[token] = f"<id{len(self.names)}>"
            return self.names[token]
        return ID_PATTERN.sub(replace, text)

    def clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.rename(k): self.clean(v) for k, v in value.items() if k not in DROPPED_KEYS}
        if isinstance(value, list):
            if len(value) == 5 and isinstance(value[0], (int, float)) and isinstance(value[1], str):
                value = ["<number>"] + value[1:]  # a queue item: [number, prompt_id, prompt, extra, outputs]
            return [self.clean(v) for v in value]
        if isinstance(value, str):
            return self.rename(value)
        return value


def normalise(transcript: Dict[str, Any], *, skip_paths: tuple = ("/object_info",)) -> List[str]:
    normaliser = Normaliser()
    lines: List[str] = []
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
                lines.append(json.dumps(["ws", event["conn"], normaliser.clean(event["json"])], sort_keys=True))
            else:
                keep = {k: event.get(k) for k in ("event_type", "image_type_code", "node_id", "text")}
                meta = event.get("metadata")
                if meta is not None:
                    keep["metadata"] = normaliser.clean(meta)
                lines.append(json.dumps(["ws-binary", event["conn"], keep], sort_keys=True))
        elif kind in ("ws_open", "ws_closed"):
            lines.append(json.dumps([kind, event["conn"]]))
    return lines


def diff(real: Dict[str, Any], emulated: Dict[str, Any]) -> List[str]:
    return list(difflib.unified_diff(normalise(real), normalise(emulated), "real", "emulated", lineterm="", n=1))


if __name__ == "__main__":
    with open(sys.argv[1]) as a, open(sys.argv[2]) as b:
        print("\n".join(diff(json.load(a), json.load(b))))
