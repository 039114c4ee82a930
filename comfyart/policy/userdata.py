"""The names and listings of ComfyUI's user manager (``/userdata``, ``/settings``), pure: a user path checked and
normalised, a route's raw path split into its file names, a directory's listing, how a file is served."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

SETTINGS_FILE = "comfy.settings.json"  # where ComfyUI keeps a user's settings, among its userdata files
DEFAULT_USER = "default"  # the one user of a single-user ComfyUI: comfyart's callers each see themselves as it
USER_CSS = "user.css"  # the one file the page links as a stylesheet: served inline
MAX_PATH_CHARS = 1024
MAX_SEGMENT_BYTES = 255  # a file name's limit on the filesystems ComfyUI writes to
# served as what they are (by extension; a fixed table, not the system's mime files); anything else as a download
# of bytes: a user's file never runs as a page, a script or markup in the origin that serves the editor
SAFE_TYPES = {"json": "application/json", "txt": "text/plain", "csv": "text/csv", "md": "text/markdown",
              "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_DRIVE = re.compile(r"^[A-Za-z]:")


class BadUserPath(ValueError):
    """A user path refused; its message says why, in one line."""


@dataclass(frozen=True)
class FileInfo:
    """One stored file as ComfyUI describes it: size in bytes, times in ms since the epoch."""

    path: str
    size: int
    created_ms: int
    modified_ms: int

    def as_comfy(self, relative_to: str = "") -> dict[str, Any]:
        """ComfyUI's ``full_info`` answer, the path relative to ``relative_to`` (a directory)."""
        path = self.path[len(relative_to) + 1:] if relative_to else self.path
        return {"path": path, "size": self.size, "modified": self.modified_ms, "created": self.created_ms}


def user_path(raw: str, *, directory: bool = False) -> str:
    """``raw`` as the one name it may be stored under (NFC), or BadUserPath. Refused: empty, longer than
    MAX_PATH_CHARS, absolute (``/x``, ``C:x``), a backslash, NUL or another control character, an empty, ``.`` or
    ``..`` segment, a segment over MAX_SEGMENT_BYTES. A ``directory`` may end with ``/``."""
    path = unicodedata.normalize("NFC", raw)
    if directory:
        path = path.rstrip("/") if path.strip("/") else path
    if not path:
        raise BadUserPath("Invalid path: empty")
    if len(path) > MAX_PATH_CHARS:
        raise BadUserPath(f"Invalid path: longer than {MAX_PATH_CHARS} characters")
    if path.startswith("/") or _DRIVE.match(path):
        raise BadUserPath("Invalid path: absolute paths are not allowed")
    if "\\" in path:
        raise BadUserPath("Invalid path: backslashes are not allowed")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise BadUserPath("Invalid path: control characters are not allowed")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise BadUserPath(f"Invalid path: {'an empty' if not segment else repr(segment)} segment "
                              "is not allowed")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise BadUserPath(f"Invalid path: a name longer than {MAX_SEGMENT_BYTES} bytes")
    return path


def decoded_name(raw_segment: str) -> str:
    """One URL-encoded segment of a route's path as ComfyUI reads it: decoded, and decoded again when that left a
    ``%`` (ComfyUI unquotes a name that still holds one)."""
    name = unquote(raw_segment)
    return unquote(name) if "%" in name else name


def userdata_target(raw_rest: str) -> tuple[str, str | None] | None:
    """The raw path after ``/userdata/`` split as ComfyUI's routes match it (each name URL-encoded, so it holds no
    ``/``): ``file`` -> (file, None); ``file/move/dest`` -> (file, dest); anything else matches no route (None)."""
    segments = raw_rest.split("/")
    if len(segments) == 1 and segments[0]:
        return decoded_name(segments[0]), None
    if len(segments) == 3 and segments[1] == "move" and segments[0] and segments[2]:
        return decoded_name(segments[0]), decoded_name(segments[2])
    return None


def _hidden(relative: str) -> bool:
    """Whether a glob's ``*`` skips it, as ComfyUI's listing (``glob``) does: any segment starting with a dot."""
    return any(segment.startswith(".") for segment in relative.split("/"))


def listing(files: Iterable[FileInfo], directory: str, *, recurse: bool, full_info: bool,
            split: bool) -> list[Any]:
    """``GET /userdata?dir=`` for the files stored: those in ``directory`` (below it too with ``recurse``), hidden
    ones left out, sorted by path; each as its path relative to the directory, ``[path, *segments]`` with
    ``split``, or its file info with ``full_info`` (which wins)."""
    prefix = directory + "/"
    found: list[Any] = []
    for info in sorted(files, key=lambda f: f.path):
        if not info.path.startswith(prefix):
            continue
        relative = info.path[len(prefix):]
        if _hidden(relative) or (not recurse and "/" in relative):
            continue
        if full_info:
            found.append(info.as_comfy(directory))
        elif split:
            found.append([relative, *relative.split("/")])
        else:
            found.append(relative)
    return found


def is_directory(paths: Iterable[str], directory: str) -> bool:
    """Whether a stored file is below ``directory`` (a directory exists while it holds a file)."""
    prefix = directory + "/"
    return any(path.startswith(prefix) for path in paths)


def served_as(path: str) -> tuple[str, str]:
    """The content type and disposition of a stored file: user.css inline as CSS (the page links it), an extension
    of SAFE_TYPES as its type, anything else as bytes; all but user.css as attachments, as newer ComfyUI serves
    them."""
    if path == USER_CSS:
        return "text/css", "inline"
    name = path.rpartition("/")[2]
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    return SAFE_TYPES.get(extension, "application/octet-stream"), "attachment"


def merged_settings(stored: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /settings``: the update's values over the stored ones, as ComfyUI's ``{**settings, **new}``."""
    return {**stored, **update}


def new_user_id(username: str, unique: str) -> str:
    """``POST /users`` as a single-user ComfyUI answers it: the name's id (runs of other characters than letters,
    digits, ``-`` and ``_`` become ``-``) and ``unique``; ValueError for a name that is blank or the one user's."""
    if username == DEFAULT_USER:
        raise ValueError("Duplicate username.")
    name = username.strip()
    if not name:
        raise ValueError("username not provided")
    return re.sub("[^a-zA-Z0-9-_]+", "-", name) + "_" + unique
