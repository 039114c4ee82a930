"""``python -m comfyart.emulator --host H --port N``: serve the emulator until SIGINT/SIGTERM.

``--count K`` serves K independent emulators on ports N .. N+K-1 from one process (a fleet for benchmarks:
each has its own queue, history, sockets and files, as K ComfyUI servers would). ``--newest`` behaves as the newest
ComfyUI server; ``--demo-pack`` and ``--extension PACK=DIR`` serve node packs' web extensions."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from comfyart.emulator.app import build_app
from comfyart.emulator.behaviour import Behaviour
from comfyart.emulator.engine import DEFAULT_CHECKPOINTS, DEFAULT_MODELS, Emulator, Flavour
from comfyart.emulator.frontend_assets import DEMO_PACK
from comfyart.emulator.inventory import MODEL_FOLDERS, node_classes
from comfyart.emulator.newest import PREVIEW_METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m comfyart.emulator", description=__doc__)
    parser.add_argument("--host", "--listen", dest="host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-dir", default=os.environ.get("EMULATOR_BASE_DIR"),
                        help="holds output/, input/ and temp/ (default: a new temporary directory)")
    parser.add_argument("--node-seconds", type=float, default=0.0, help="time every executed node takes")
    parser.add_argument("--step-seconds", type=float, default=0.02, help="time each KSampler step takes")
    parser.add_argument("--model-load-seconds", type=float, default=0.0,
                        help="time CheckpointLoaderSimple or UNETLoader takes when the model changes")
    parser.add_argument("--checkpoints", default=",".join(DEFAULT_CHECKPOINTS),
                        help="comma-separated checkpoint names: empty files created in <base-dir>/models/checkpoints, "
                             "whose files (with a model extension) are the checkpoints it has; \"\" adds none")
    parser.add_argument("--models", default=_listed(DEFAULT_MODELS),
                        help="comma-separated FOLDER/NAME model files besides the checkpoints, created as "
                             "--checkpoints creates its own (default: those the web editor's default workflow "
                             "loads); \"\" adds none")
    parser.add_argument("--without-nodes", default="",
                        help="comma-separated node classes this server lacks (absent from /object_info, refused)")
    parser.add_argument("--vram-mb", type=int, default=24576, help="VRAM reported when a GPU is pinned")
    parser.add_argument("--gpu", default=None, help="report this GPU index as if it were pinned (default: from "
                                                    "NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--megapixel-seconds", type=float, default=0.0,
                        help="compute time per megapixel of images a node outputs (0.03 is close to a CPU ComfyUI)")
    parser.add_argument("--fail-node-types", default="", help="comma-separated node types that raise")
    parser.add_argument("--behaviour", default="{}", help="JSON object merged into the run-time behaviour")
    parser.add_argument("--count", type=int, default=1, help="independent emulators on consecutive ports")
    _flavour_args(parser)
    args = parser.parse_args(argv)
    try:  # a typo would leave out nothing: refuse it before starting
        node_classes(_names(args.without_nodes))
    except ValueError as exc:
        parser.error(f"--without-nodes: {exc}")
    try:
        args.model_files = parse_models(args.models)
    except ValueError as exc:
        parser.error(f"--models: {exc}")
    try:
        args.extensions = parse_extensions(args.extension)
    except ValueError as exc:
        parser.error(f"--extension: {exc}")
    return args


def _flavour_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--newest", action="store_true",
                        help="behave as the newest ComfyUI server instead of 0.3.64 (see comfyart/emulator/newest.py)")
    parser.add_argument("--preview-method", default="none", choices=PREVIEW_METHODS,
                        help="ComfyUI's --preview-method: a sampler's previews unless \"none\" (newest: each prompt's "
                             "extra_data.preview_method overrides it)")
    parser.add_argument("--devices", type=int, default=1, help="GPUs /system_stats lists in --newest mode")
    parser.add_argument("--extension", action="append", default=[], metavar="PACK=DIR",
                        help="serve DIR's .js files as node pack PACK's web extension (repeatable)")
    parser.add_argument("--demo-pack", action="store_true",
                        help=f"serve the built-in demo node pack \"{DEMO_PACK}\" (web extension, example workflow)")


def parse_extensions(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``PACK=DIR`` values as (pack, directory) pairs; a missing directory or a bad pair is a ValueError."""
    packs = []
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name.strip() or "/" in name:
            raise ValueError(f"{value!r} is not PACK=DIR")
        if not os.path.isdir(folder):
            raise ValueError(f"{folder!r} is not a directory")
        packs.append((name.strip(), os.path.abspath(folder)))
    return tuple(packs)


def parse_models(text: str) -> dict[str, list[str]]:
    """``FOLDER/NAME,...`` as names by model folder; a value without a folder or of an unknown folder is a
    ValueError."""
    models: dict[str, list[str]] = {}
    for value in _names(text):
        folder, sep, name = value.partition("/")
        if not sep or not name:
            raise ValueError(f"{value!r} is not FOLDER/NAME")
        if folder not in MODEL_FOLDERS:
            raise ValueError(f"{folder!r} is no model folder (one of {', '.join(MODEL_FOLDERS)})")
        models.setdefault(folder, []).append(name)
    return models


def _listed(models: Mapping[str, Sequence[str]]) -> str:
    return ",".join(f"{folder}/{name}" for folder, names in models.items() for name in names)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _emulator(args: argparse.Namespace, base_dir: str) -> Emulator:
    flavour = Flavour(newest=args.newest, preview_method=args.preview_method, devices=args.devices,
                      extensions=args.extensions, demo_pack=args.demo_pack)
    return Emulator(base_dir, _behaviour(args), checkpoints=_names(args.checkpoints), vram_mb=args.vram_mb,
                    gpu=args.gpu, without_nodes=_names(args.without_nodes), flavour=flavour,
                    models=args.model_files)


def _behaviour(args: argparse.Namespace) -> Behaviour:
    behaviour = Behaviour(node_s=args.node_seconds, step_s=args.step_seconds, model_load_s=args.model_load_seconds,
                          megapixel_s=args.megapixel_seconds,
                          fail_node_types=[t for t in args.fail_node_types.split(",") if t])
    behaviour.update(json.loads(args.behaviour))
    return behaviour


async def _serve_fleet(args: argparse.Namespace, base_dir: str) -> None:
    runners = []
    for index in range(args.count):
        emulator = _emulator(args, os.path.join(base_dir, str(args.port + index)))
        runner = web.AppRunner(build_app(emulator), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port + index).start()
        runners.append(runner)
    print(f"comfyart emulator fleet listening on http://{args.host}:{args.port}-{args.port + args.count - 1}",
          flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: a fleet of emulators in one process stands in for many machines, and should cost
    this one as little as it can."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # without --base-dir the files live in a temporary directory that goes away with the emulator
    with tempfile.TemporaryDirectory(prefix="comfyart-emulator-") as scratch:
        base_dir = args.base_dir or scratch
        if args.count > 1:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(_serve_fleet(args, base_dir))
            return
        emulator = _emulator(args, base_dir)
        print(f"comfyart emulator listening on http://{args.host}:{args.port} (files in {base_dir})", flush=True)
        factory = _loop_factory()
        web.run_app(build_app(emulator), host=args.host, port=args.port, print=None, access_log=None,
                    loop=factory() if factory else None)


if __name__ == "__main__":
    main()
