"""The client WebSockets (``/ws``): each socket's outbox (``Connection``) and the handler that writes it, and the
loop that sends each client the end of its prompts and every socket the queue length when it changes."""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from loguru import logger

from comfyart.api.comfyui.shapes import FEATURES, terminal_message
from comfyart.api.limits import parse_json
from comfyart.auth import Principal
from comfyart.bus import EventHub
from comfyart.config.sections import LimitsConfig
from comfyart.errors import NotFound, TransientError
from comfyart.models import FINAL_STATUSES, TaskStatus, socket_key
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore

HOLD_PROGRESS_S = 0.05
# how long a prompt the backend finished may hold back the next one's frames while comfyart stores its outputs
FINISHING_S = 10.0
ENDED_REMEMBERED = 1000
OUTBOX_FRAMES = 4096  # a client this far behind is disconnected, as it would stall nothing else


class Connection:
    """One client socket's outbox: frames are queued without waiting and written by the socket's own handler."""

    def __init__(self, sid: str, owner: str | None = None) -> None:
        self.sid = sid
        self.owner = owner  # whose socket: a prompt without a client id is broadcast to its owner's sockets only
        self.frames: collections.deque[Any] = collections.deque()
        self.ready = asyncio.Event()
        self.closed = False
        self.preview_metadata = False
        self.held: dict[str, Any] | None = None
        self.held_task: str | None = None
        # tasks whose progress no preview followed: their progress goes out at once (a backend that sends no
        # previews, such as ComfyUI asked for none, would otherwise make every step wait HOLD_PROGRESS_S)
        self.unpreviewed: set[str] = set()
        # by task id, not by the client's prompt id: a client may reuse its prompt id, and each run is told in full
        self.open: set[str] = set()  # its prompts not ended yet: no status may tell it the queue is shorter
        self.ended: collections.OrderedDict[str, None] = collections.OrderedDict()  # recent ends: no frame after
        self.status_sent: int | None = None
        self.nodes: dict[str, str | None] = {}  # task id -> node running, for preview metadata
        # prompts whose backend told their end, not yet told here (their outputs are being stored), each with the
        # time until which the frames of the client's other prompts wait behind it: ComfyUI tells a prompt's end
        # before the next one's start, and the editor forgets the running prompt at any prompt's end
        self.finishing: dict[str, float] = {}
        # those frames: (task id, the tasks it waits for, the call that queues it)
        self.waiting: list[tuple[str, set[str], Callable[[], None]]] = []
        self._releasing = False

    def _append(self, frame: Any) -> None:
        if self.closed:
            return
        if len(self.frames) >= OUTBOX_FRAMES:
            logger.warning("comfyui client too slow, disconnected client={}", self.sid)
            self.close()
            return
        self.frames.append(frame)
        self.ready.set()

    def put(self, frame: Any) -> None:
        self.flush_held()
        self._append(frame)

    def hold(self, progress: dict[str, Any], task_id: str) -> None:
        """A progress frame that waits for its preview: backends send comfyart type-1 previews after their
        progress, but a client that asked for metadata gets type 4, which ComfyUI sends before it. Not for a task
        whose progress no preview followed before (see ``unpreviewed``)."""
        if task_id in self.unpreviewed:
            self.put(progress)
            return
        self.flush_held()
        self.held, self.held_task = progress, task_id
        self.ready.set()

    def put_preview(self, preview: bytes, task_id: str) -> None:
        self.unpreviewed.discard(task_id)
        self._append(preview)
        self.flush_held()

    def flush_held(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self._append(held)

    def put_status(self, remaining: int, sid: str | None = None) -> None:
        """A ``status`` frame; a socket hears of a queue length once (the first one carries ``sid``)."""
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
        if sid is not None:
            data["sid"] = sid
        self.status_sent = remaining
        self.put({"type": "status", "data": data})

    def end(self, task_id: str) -> None:
        """The task's prompt ended (its end told, where there is one to tell): no frame of it may follow."""
        self.nodes.pop(task_id, None)
        self.unpreviewed.discard(task_id)
        self.open.discard(task_id)
        self.ended[task_id] = None
        if len(self.ended) > ENDED_REMEMBERED:
            self.ended.popitem(last=False)
        self.finished(task_id)

    def finishing_on_backend(self, task_id: str) -> None:
        """The backend told the end of ``task_id``'s prompt: the frames of others wait until it is told here."""
        self.finishing.setdefault(task_id, time.monotonic() + FINISHING_S)

    def send(self, task_id: str, queue_it: Callable[[], None], *, end: bool = False) -> None:
        """Queue a frame of ``task_id`` (``end``: its end) now, or once the prompts whose backend finished them
        before it are told; a task's own frames keep their order."""
        if end:  # behind the prompts its backend finished before it
            ahead = set(itertools.takewhile(lambda other: other != task_id, self.finishing))
        else:
            if task_id in self.finishing:
                self.finished(task_id)  # it runs again (another attempt): it holds nothing back
            ahead = set(self.finishing)
        if ahead or any(waiting == task_id for waiting, _, _ in self.waiting):
            self.waiting.append((task_id, ahead, queue_it))
            self.ready.set()
        else:
            queue_it()

    def finished(self, task_id: str | None = None) -> None:
        """``task_id`` (None: those past their time) no longer holds frames back: the frames waiting for nothing
        else go out."""
        now = time.monotonic()
        self.finishing = {t: until for t, until in self.finishing.items() if t != task_id and until > now}
        for _, ahead, _ in self.waiting:
            ahead.intersection_update(self.finishing)
        if self._releasing:
            return  # a waiting end being queued: the loop below goes on
        self._releasing = True
        try:
            while (item := self._releasable()) is not None:
                self.waiting.remove(item)
                item[2]()
        finally:
            self._releasing = False

    def _releasable(self) -> tuple[str, set[str], Callable[[], None]] | None:
        held_back: set[str] = set()
        for item in self.waiting:
            if not item[1] and item[0] not in held_back:
                return item
            held_back.add(item[0])
        return None

    def wait_s(self) -> float | None:
        """How long the writer may wait for a new frame before a held one must go out anyway (None: no limit)."""
        if self.held is not None and not self.frames:
            return HOLD_PROGRESS_S
        if self.waiting:
            return max(0.0, min(self.finishing.values(), default=0.0) - time.monotonic())
        return None

    def overdue(self) -> None:
        """The writer waited ``wait_s``: a held progress frame goes out alone (and its task's next ones do not wait:
        no preview follows them), frames held back past their time."""
        if self.held is not None and not self.frames:
            if self.held_task is not None:
                self.unpreviewed.add(self.held_task)
            self.flush_held()
        self.finished()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


def callers(connections: dict[str, Connection], owner: str | None) -> list[Connection]:
    """The sockets of one caller (API key): where ComfyUI would send a frame to every socket, comfyart sends it to
    these, as every caller has a ComfyUI of its own."""
    return [connection for connection in connections.values() if connection.owner == owner]


class Sockets:
    """``/ws?clientId=…`` gets the frames of that client's prompts from whichever backend runs them, rewritten to the
    client's prompt id (``Relay``), and the end of each prompt once its task is final: ``execution_success`` only
    after the outputs are stored, so ``/history`` and ``/view`` already answer. ``status`` counts the cluster's
    unfinished tasks. Sockets are kept by ``socket_key(owner, client id)``; the relay and ``POST /prompt`` reach
    them too."""

    def __init__(self, *, store: TaskStore, queue: TaskQueue, events: EventHub, limits: LimitsConfig) -> None:
        self.store = store
        self.queue = queue
        self.events = events
        self.limits = limits
        self.connections: dict[str, Connection] = {}  # by socket_key(owner, client id)
        # replicated: hear the frames other replicas relay to a socket while it is open here (``build_frames``)
        self.follow: Callable[[str, str | None], Callable[[], None]] | None = None
        self._remaining: int | None = None

    async def run(self) -> None:
        """Sends each client the end of its prompts, and every socket the queue length when it changes."""
        def wanted(event: dict[str, Any]) -> bool:  # judged as it is published: the rest never queue up
            if event.get("type") != "task" or event.get("status") == event.get("previous"):
                return False
            if event.get("previous") is None and "client_id" in event:
                return False  # queued through POST /prompt: its status follows the HTTP answer (queue_prompt)
            return bool(self.connections) or "client_id" in event

        while True:  # a lagged subscription ends its stream: subscribe again
            with self.events.subscribe(wanted, capacity=100_000) as events:
                async for event in events:
                    burst = [event]
                    while (more := await events.get(0)) is not None:  # a burst: one status for all of it
                        burst.append(more)
                    for item in burst:
                        if item["type"] != "task" or item["status"] not in FINAL_STATUSES:
                            continue
                        if item.get("client_id"):
                            await self._send_end(item["id"], socket_key(item.get("owner"), item["client_id"]),
                                                 item.get("previous"))
                            continue
                        # a prompt without a client id: its frames go to every socket of its caller, and none may
                        # follow its end (the tracker may relay a late one until it hears of the cancel)
                        for listener in callers(self.connections, item.get("owner")):
                            listener.end(item["id"])
                        if item["status"] == TaskStatus.CANCELED and item.get("previous") == TaskStatus.RUNNING:
                            await self._broadcast_interrupted(item["id"], item.get("owner"))
                    await self.broadcast_status()

    async def _send_end(self, task_id: str, socket: str, previous: str | None) -> None:
        connection = self.connections.get(socket)
        if connection is None:
            return
        try:
            task = await self.store.get(task_id)
        except (NotFound, TransientError):
            return
        if task.comfy_prompt_id is None:
            return
        if task.status is TaskStatus.CANCELED and previous != TaskStatus.RUNNING:
            connection.open.discard(task.id)
            return  # a prompt deleted from the queue ends silently, as in ComfyUI
        kind, data = terminal_message(task)
        remaining, prompt_id = await self.remaining(), task.comfy_prompt_id

        def tell() -> None:
            connection.put({"type": kind, "data": data})
            connection.put_status(remaining)
            connection.put({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}})
            connection.end(task.id)
        connection.send(task.id, tell, end=True)

    async def _broadcast_interrupted(self, task_id: str, owner: str | None) -> None:
        """ComfyUI sends ``execution_interrupted`` even for a prompt without a client id, to every socket (it is
        the one lifecycle frame it broadcasts): here to every socket of the prompt's owner."""
        listeners = callers(self.connections, owner)
        if not listeners:
            return
        try:
            task = await self.store.get(task_id)
        except (NotFound, TransientError):
            return
        if task.comfy_prompt_id is None:
            return  # queued through comfyart's own API: no ComfyUI client hears of it
        kind, data = terminal_message(task)
        if kind == "execution_interrupted":
            for listener in listeners:
                listener.put({"type": kind, "data": data})

    async def remaining(self) -> int:
        try:
            return await self.queue.unfinished()
        except TransientError:
            return self._remaining or 0

    async def broadcast_status(self) -> None:
        if not self.connections:
            return
        remaining = await self.remaining()
        self._remaining = remaining
        for connection in list(self.connections.values()):
            # a client's own unfinished prompts are still queued, whatever the count read a moment ago says:
            # their end brings the next status
            if connection.status_sent != remaining and remaining >= len(connection.open):
                connection.put_status(remaining)

    async def serve(self, websocket: WebSocket, principal: Principal) -> None:
        remaining = await self.remaining()  # read before the socket is accepted: from the accept on, nothing
        # is awaited until it is registered, so sockets of one client id take over in the order they connected
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        key = socket_key(principal.owner, sid)
        connection = Connection(sid, principal.owner)
        connection.put_status(remaining, sid)  # before any frame can be relayed to it
        replaced = self.connections.get(key)
        self.connections[key] = connection  # the newest socket of a client id takes over; the old one goes deaf
        if replaced is not None:
            replaced.frames.clear()
            connection.open = replaced.open
        reader = asyncio.get_running_loop().create_task(self._read_client(websocket, connection),
                                                        name=f"comfyui client {sid}")
        unfollow = self.follow(key, principal.owner) if self.follow is not None else None
        try:
            while not connection.closed:
                try:  # a held progress frame goes out alone when no preview follows it soon
                    async with asyncio.timeout(connection.wait_s()):
                        await connection.ready.wait()
                except TimeoutError:
                    connection.overdue()
                await connection.ready.wait()
                connection.ready.clear()
                while connection.frames and self.connections.get(key) is connection:
                    frame = connection.frames.popleft()
                    if isinstance(frame, bytes):
                        await websocket.send_bytes(frame)
                    else:
                        await websocket.send_text(json.dumps(frame))
                if self.connections.get(key) is not connection:
                    connection.frames.clear()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            connection.close()
            reader.cancel()
            if self.connections.get(key) is connection:
                del self.connections[key]
            if unfollow is not None:
                unfollow()

    async def _read_client(self, websocket: WebSocket, connection: Connection) -> None:
        first = True
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if first and text:
                    try:
                        frame = parse_json(text, self.limits.max_json_depth)
                    except ValueError:
                        frame = None
                    if isinstance(frame, dict) and frame.get("type") == "feature_flags":
                        flags = frame.get("data")
                        connection.preview_metadata = (isinstance(flags, dict)
                                                       and flags.get("supports_preview_metadata") is True)
                        connection.put({"type": "feature_flags", "data": FEATURES})
                first = False  # anything else a client sends is ignored, as ComfyUI does
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            connection.close()
