"""Decisions of the start-up routes (api.comfyui.startup): which request paths may reach a backend, who sees every
owner's jobs."""
from __future__ import annotations

from comfyart.api.comfyui.deps import sees_everyone
from comfyart.api.comfyui.startup import safe_path
from comfyart.auth import NOBODY, Principal, Role


def test_a_path_that_could_leave_its_folder_never_reaches_a_backend():
    assert safe_path("pack/web/x.js") == "pack/web/x.js"
    assert safe_path("my pack/a#b?.js") == "my%20pack/a%23b%3F.js"  # quoted: a query or fragment stays a name
    for bad in ("", "../x.js", "pack/../../x", "pack/./x.js", "/etc/passwd", "pack//x.js", "pack\\..\\x",
                "pack/x\0.js", "pack/", ".."):
        assert safe_path(bad) is None, bad


def test_only_an_admin_with_auth_on_sees_every_owners_jobs():
    assert sees_everyone(Principal(id="key:ops", name="ops", role=Role.ADMIN))
    assert not sees_everyone(Principal(id="key:alice", name="alice", role=Role.CLIENT))
    assert not sees_everyone(NOBODY)  # auth off: one namespace, everyone's already
