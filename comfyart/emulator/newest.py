"""How the newest ComfyUI server differs from 0.3.64, as small decisions the routes and the run apply when the
emulator runs with ``--newest``. Each names the upstream file (Comfy-Org/ComfyUI, read from the search index) it
follows:

- a client's ``prompt_id`` must be a canonical lowercase UUID, else 400 ``invalid_prompt_id``:
  server.py ``post_prompt`` and comfy_execution/jobs.py ``validate_job_id`` (server.py @002c3fb9,
  jobs.py @172be438);
- the ``Comfy-Usage-Source`` header is copied into ``extra_data["comfy_usage_source"]`` unless the body sets it,
  the sensitive keys (execution.py ``SENSITIVE_EXTRA_DATA_KEYS``, @04e2a914) are taken out of ``extra_data``
  before the prompt is queued (so /queue, /history and /api/jobs never show them), and ``create_time`` (ms) is
  added: server.py ``post_prompt`` @002c3fb9;
- previews are sent only where the prompt's ``extra_data["preview_method"]`` (or, for None, "default" or an unknown
  name, the launch ``--preview-method``) asks for them: latent_preview.py ``set_preview_method`` @2d619ed9, called
  by execution.py for each prompt;
- a running node's ``progress_state`` entry carries ``activity`` while it says what it spends its time on:
  comfy_execution/progress.py ``NodeProgressState.activity`` / ``set_activity`` @1b71f275 (the emulator sets
  "loading" while CheckpointLoaderSimple loads a checkpoint, the example that file gives);
- /features and the socket's ``feature_flags`` reply: comfy_api/feature_flags.py ``get_server_features``.
"""
from __future__ import annotations

import uuid
from typing import Any

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
# latent_preview's LatentPreviewMethod values; "none" is NoPreviews
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
LOADING = "loading"

FEATURES_0_3_64 = {"supports_preview_metadata": True, "max_upload_size": 104857600}
FEATURES_NEWEST = {"supports_preview_metadata": True, "supports_model_type_tags": True,
                   "max_upload_size": 104857600, "extension": {"manager": {"supports_v4": True}},
                   "node_replacements": True, "assets": False}


def server_features(newest: bool) -> dict[str, Any]:
    return dict(FEATURES_NEWEST if newest else FEATURES_0_3_64)


def is_canonical_uuid(value: Any) -> bool:
    """jobs.validate_job_id: a string that ``uuid.UUID`` reads and writes back unchanged."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


INVALID_PROMPT_ID = {
    "type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let the server "
               "generate one",
    "extra_info": {}}


def preview_method(newest: bool, launch_default: str, requested: Any) -> str:
    """The preview method a prompt runs with: 0.3.64 has only the launch default; the newest server lets the
    prompt's ``extra_data.preview_method`` override it (None, "default" or a name it does not know: the default)."""
    if newest and isinstance(requested, str) and requested != "default" and requested in PREVIEW_METHODS:
        return requested
    return launch_default


def sends_previews(method: str) -> bool:
    return method != "none"


def queued_extra_data(extra_data: dict[str, Any], usage_source: str | None, *, newest: bool,
                      now_ms: int) -> dict[str, Any]:
    """The ``extra_data`` a prompt is queued with (``extra_data``: the body's, with its ``client_id``), as each
    server builds it from the request."""
    extra = dict(extra_data)
    if not newest:
        return extra
    if "comfy_usage_source" not in extra and usage_source:
        extra["comfy_usage_source"] = usage_source
    for key in SENSITIVE_EXTRA_DATA_KEYS:
        extra.pop(key, None)
    extra["create_time"] = now_ms
    return extra
