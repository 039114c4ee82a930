"""What the remote commands send: a workflow that ``workflows show`` printed goes back through ``put`` as it is."""
from __future__ import annotations

from comfyart.cli.remote import definition_of


def test_put_sends_a_shown_workflow_without_what_the_daemon_added():
    shown = {"graph": {"1": {}}, "params": {}, "description": "d", "name": "n", "version": 3, "created_ms": 1,
             "updated_ms": 2, "source": "api", "versions": [1, 2, 3], "typo": 1}
    assert definition_of(shown) == {"graph": {"1": {}}, "params": {}, "description": "d", "typo": 1}
    assert definition_of([1]) == [1]
