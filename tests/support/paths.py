"""Where the tests find the repository and the shared folder beside it (the recorded ComfyUI transcripts and the
capture client)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
