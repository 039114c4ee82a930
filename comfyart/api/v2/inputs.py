"""Assets as inputs of a submitted v2 graph (API-V2.md §5 AssetReference): each ``{"__type": "core/ASSET",
"info": {"id": …}}`` and each input string that is one of the caller's asset ``file_path``s (``photo.png``, as a
single ComfyUI's LoadImage would find an upload) becomes the name the asset's bytes will have in a backend's
input directory (``policy.assets.comfy_input_name``: the blob's digest, so two owners' files never collide). The
dispatcher puts the bytes on whichever backend runs the job (``workflows.resolve``), after checking again that
the job's owner still has an asset of them."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from comfyart.api.v2.answers import V2Refused
from comfyart.policy.assets import comfy_input_name, graph_assets, missing_ids, with_input_names
from comfyart.store.assets import AssetRecord, AssetStore


@dataclass(frozen=True)
class ResolvedGraph:
    """A graph whose assets are file names now, and those names (the graph check against the fleet accepts
    them: no backend lists them before the dispatcher delivers them)."""

    workflow: dict[str, Any]
    input_names: frozenset[str]


def _name(record: AssetRecord) -> str:
    return comfy_input_name(record.hex, record.file_path)


async def resolve_assets(assets: AssetStore | None, owner: str | None, workflow: dict[str, Any]) -> ResolvedGraph:
    """``workflow`` with its assets resolved; 422 ``missing_asset`` (``details.missing_ids``) when a reference
    is malformed or names no live asset of ``owner`` (another's is as unknown). Strings that name no asset stay
    as they are: a backend's own input files."""
    found = graph_assets(workflow)
    if assets is None or (not found.ids and not found.paths):
        if found.ids:
            raise V2Refused("missing_asset", "this server keeps no assets", {"missing_ids": found.ids})
        return ResolvedGraph(workflow, frozenset())
    records, named = await asyncio.gather(  # the references and the file_paths at once: one wait, not two
        assets.many(owner, [asset_id for asset_id in found.ids if asset_id is not None]),
        assets.by_paths(owner, found.paths))
    missing = missing_ids(found.ids, records)
    if missing:
        raise V2Refused("missing_asset", f"no asset {', '.join(str(m) for m in missing)}",
                        {"missing_ids": missing})
    by_path = {path: _name(record) for path, record in named.items()}
    by_id = {asset_id: _name(record) for asset_id, record in records.items()}
    if not by_id and not by_path:
        return ResolvedGraph(workflow, frozenset())
    return ResolvedGraph(with_input_names(workflow, by_id, by_path), frozenset(by_id.values()) | set(by_path.values()))
