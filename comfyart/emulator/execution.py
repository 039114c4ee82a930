"""Running one queued prompt as ComfyUI does: the cache by input signature, ComfyUI's node order, the lifecycle,
progress and preview frames, and the history entry written before the final ``executing`` frame.
"""
from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from comfyart.emulator.behaviour import CLOSE_SOCKETS, junk_frames
from comfyart.emulator.catalogue import SPECS
from comfyart.emulator.images import preview_frame
from comfyart.emulator.newest import LOADING, preview_method, sends_previews
from comfyart.emulator.nodes import Context, NodeError, NodeResult, run_node
from comfyart.emulator.ordering import ExecutionOrder

if TYPE_CHECKING:
    from comfyart.emulator.engine import Emulator

# the loaders whose model the server holds in VRAM: loading another one takes --model-load-seconds
MODEL_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name"}


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def wire(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


def now_ms() -> int:
    return int(time.time() * 1000)


class _Interrupted(Exception):
    pass


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """Each node's cache key: its class and inputs, with links replaced by the upstream node's own key."""
    memo: dict[str, str] = {}

    def sig(node_id: str) -> str:
        if node_id not in memo:
            node = prompt[node_id]
            parts: list[list[Any]] = []
            for name, value in sorted(node.get("inputs", {}).items()):
                if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                    parts.append([name, sig(str(value[0])), value[1]])
                else:
                    parts.append([name, value])
            memo[node_id] = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
        return memo[node_id]

    for node_id in prompt:
        sig(node_id)
    return memo


class PromptRun:
    """One prompt's execution on ``emu``: what it has computed so far, and how it ended."""

    def __init__(self, emu: Emulator, item: QueueItem) -> None:
        self.emu = emu
        self.item = item
        self.pid, self.prompt, self.cid = item.prompt_id, item.prompt, item.extra_data.get("client_id")
        self.messages: list[list[Any]] = []
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.executed: list[str] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.new_cache: dict[str, NodeResult] = {}
        self.outcome = "success"
        self.error_data: dict[str, Any] = {}
        flavour = emu.flavour
        # the newest server lets each prompt pick its latent previews; 0.3.64 has only --preview-method
        self.latent_previews = sends_previews(preview_method(flavour.newest, flavour.preview_method,
                                                             item.extra_data.get("preview_method")))

    async def run(self) -> None:
        await self._start()
        emu, pid = self.emu, self.pid
        signature_of = signatures(self.prompt)
        cached_ids = [n for n in self.prompt if signature_of[n] in emu.cache]
        await self.lifecycle("execution_cached", {"nodes": cached_ids, "prompt_id": pid, "timestamp": now_ms()})
        for cached_id in cached_ids:  # cached outputs feed the nodes that do run, and stay cached
            signature = signature_of[cached_id]
            self.values[cached_id] = emu.cache[signature][0]
            self.new_cache[signature] = emu.cache[signature]
        prompt = self.prompt
        order = ExecutionOrder(prompt, self.item.outputs, is_cached=lambda n: signature_of[n] in emu.cache,
                               is_output=lambda n: SPECS[prompt[n]["class_type"]].output_node)
        while (node_id := order.next()) is not None:
            order.finish(node_id)
            if not await self._node(node_id, signature_of[node_id]):
                break
        await self._finish()

    async def lifecycle(self, kind: str, data: dict[str, Any], broadcast: bool = False) -> None:
        self.messages.append([kind, data])
        await self.emu.send(kind, data, self.cid, broadcast_without_client=broadcast)

    async def progress_state(self) -> None:
        # send() encodes at once: the frame holds the states as they are now
        await self.emu.send("progress_state", {"prompt_id": self.pid, "nodes": self.states}, self.cid,
                            broadcast_without_client=True)

    def node_state(self, node_id: str, value: Any, maximum: Any, state: str) -> None:
        self.states[node_id] = {"value": value, "max": maximum, "state": state, "node_id": node_id,
                                "prompt_id": self.pid, "display_node_id": node_id, "parent_node_id": None,
                                "real_node_id": node_id}

    async def _start(self) -> None:
        emu, pid, cid = self.emu, self.pid, self.cid
        await emu.broadcast_status()
        if emu.behaviour.crash_on_prompt:
            os._exit(3)
        emu.interrupt_requested = False
        emu.prompts_run += 1
        await self.lifecycle("execution_start", {"prompt_id": pid, "timestamp": now_ms()})
        if cid is not None and "ws_junk" in emu.behaviour.garbage:
            for junk in junk_frames(pid):
                await emu.post(cid, junk)
        if cid is not None and "huge_frame" in emu.behaviour.garbage:
            huge = {"type": "progress", "data": {"prompt_id": pid, "junk": "x" * (65 << 20)}}
            await emu.post(cid, json.dumps(huge))
        if emu.behaviour.drop_ws_after_start:
            emu.behaviour.drop_ws_after_start = False
            await emu.post(None, CLOSE_SOCKETS)

    async def _node(self, node_id: str, signature: str) -> bool:
        """Run one node, or replay it from the cache; False once the prompt ends at it."""
        emu, pid, cid = self.emu, self.pid, self.cid
        class_type = self.prompt[node_id]["class_type"]
        if signature in emu.cache:
            ui = emu.cache[signature][1]
            if ui is not None:
                self.ui_outputs[node_id] = ui
                await emu.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": pid}, cid)
                self.node_state(node_id, 1, 1, "finished")
                await self.progress_state()
            return True
        self.node_state(node_id, 0.0, 1.0, "running")
        await self.progress_state()
        emu.running_node = node_id
        await emu.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, cid)
        inputs = {name: (self.values[str(v[0])][v[1]] if isinstance(v, list) and len(v) == 2 else v)
                  for name, v in self.prompt[node_id].get("inputs", {}).items()}
        try:
            if emu.interrupt_requested:
                raise _Interrupted()
            outputs, ui = await self._call(node_id, class_type, inputs)
        except _Interrupted:
            self.outcome = "interrupted"
            self.error_data = {"prompt_id": pid, "node_id": node_id, "node_type": class_type,
                               "executed": list(self.executed), "timestamp": now_ms()}
            return False
        except NodeError as exc:
            self.outcome = "error"
            self.error_data = _error_data(pid, node_id, class_type, self.executed, exc, exc.exception_type, inputs)
            return False
        except Exception as exc:  # a bug in a node implementation still reports like ComfyUI does
            self.outcome = "error"
            self.error_data = _error_data(pid, node_id, class_type, self.executed, exc, type(exc).__name__, inputs)
            return False
        self.values[node_id] = outputs
        self.new_cache[signature] = (outputs, ui)
        self.executed.append(node_id)
        if ui is not None:
            self.ui_outputs[node_id] = ui
            await emu.send("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid},
                           cid)
        reported = self.states[node_id]["max"]  # a node that reported progress finishes at its own max
        self.node_state(node_id, reported if reported != 1.0 else 1.0, reported, "finished")
        await self.progress_state()
        return True

    async def _finish(self) -> None:
        emu, pid, item = self.emu, self.pid, self.item
        emu.cache = self.new_cache
        if self.outcome == "success":
            await self.lifecycle("execution_success", {"prompt_id": pid, "timestamp": now_ms()})
        elif self.outcome == "error":
            await self.lifecycle("execution_error", self.error_data)
        else:
            await self.lifecycle("execution_interrupted", self.error_data, broadcast=True)
        extra = {k: v for k, v in item.extra_data.items() if k not in ("auth_token_comfy_org", "api_key_comfy_org")}
        emu.history[pid] = {
            "prompt": [item.number, pid, self.prompt, extra, item.outputs],
            "outputs": self.ui_outputs,
            "status": {"status_str": "success" if self.outcome == "success" else "error",
                       "completed": self.outcome == "success", "messages": self.messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                     for n in self.ui_outputs},
        }
        while len(emu.history) > 10000:
            emu.history.pop(next(iter(emu.history)))
        emu.running = None
        emu.running_node = None
        await emu.broadcast_status()
        await emu.send("executing", {"node": None, "prompt_id": pid}, self.cid)

    async def _call(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> NodeResult:
        """The node's implementation, with the durations and failures ``Behaviour`` asks for."""
        emu, behaviour = self.emu, self.emu.behaviour
        if behaviour.hang:
            while True:  # a hung backend: HTTP keeps answering, the node never ends
                await asyncio.sleep(3600)
        if class_type in behaviour.fail_node_types:
            raise NodeError(f"emulated failure in {class_type} (node {node_id})")
        model = inputs.get(MODEL_LOADERS.get(class_type, ""))
        if class_type in MODEL_LOADERS and emu.loaded_model != model:
            if emu.flavour.newest:  # progress.py set_activity: what the running node spends its time on
                self.states[node_id]["activity"] = LOADING
                await self.progress_state()
            await asyncio.sleep(behaviour.model_load_s)
            self.states[node_id].pop("activity", None)
            emu.loaded_model = model
            emu.model_loads += 1
        if behaviour.node_s:
            await asyncio.sleep(behaviour.node_s)
        outputs, ui = await run_node(class_type, inputs, self._context(node_id, class_type))
        if behaviour.megapixel_s:
            pixels = sum(im.size[0] * im.size[1] for out in outputs if isinstance(out, list)
                         for im in out if isinstance(im, Image.Image))
            await asyncio.sleep(behaviour.megapixel_s * pixels / 1e6)
        return outputs, ui

    def _context(self, node_id: str, class_type: str) -> Context:
        """What the node may touch: its folders, and progress, preview and text frames sent as ComfyUI does."""
        emu, behaviour, pid, cid = self.emu, self.emu.behaviour, self.pid, self.cid

        async def report_progress(value: int, maximum: int, preview: Image.Image | None, jpeg: bool = False) -> None:
            if class_type == "KSampler" and behaviour.step_s:
                await asyncio.sleep(behaviour.step_s)
            if emu.interrupt_requested:
                raise _Interrupted()
            self.node_state(node_id, value, maximum, "running")
            await self.progress_state()
            metadata_first = preview is not None and cid is not None and \
                emu.socket_flags.get(cid, {}).get("supports_preview_metadata") is True
            frame = preview_frame(preview, node_id, pid, metadata_first, jpeg) if preview is not None else None
            if frame is not None and metadata_first:
                await emu.post(cid, frame)
            await emu.send("progress", {"value": value, "max": maximum, "prompt_id": pid, "node": node_id}, cid,
                           broadcast_without_client=True)
            if frame is not None and not metadata_first:
                await emu.post(cid, frame)

        async def send_text(text: str) -> None:
            encoded = node_id.encode()
            frame = struct.pack(">I", 3) + struct.pack(">I", len(encoded)) + encoded + text.encode()
            await emu.post(None, frame)  # ComfyUI's send_progress_text names no socket: every one gets it

        return Context(output_dir=emu.output_dir, input_dir=emu.input_dir, temp_dir=emu.temp_dir,
                       temp_prefix=emu.temp_prefix(node_id), prompt=self.item.prompt,
                       extra_pnginfo=self.item.extra_data.get("extra_pnginfo"), report_progress=report_progress,
                       send_text=send_text, latent_previews=self.latent_previews)


def _error_data(pid: str, node_id: str, class_type: str, executed: list[str], exc: Exception,
                exception_type: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"prompt_id": pid, "node_id": node_id, "node_type": class_type, "executed": list(executed),
            "exception_message": str(exc), "exception_type": exception_type,
            "traceback": [f"  File \"emulator\", in {class_type}\n"],
            "current_inputs": {k: [repr(v)[:200]] for k, v in inputs.items()},
            "current_outputs": [], "timestamp": now_ms()}
