"""The configuration's sections (config.sections): an auth section that cannot work is refused by field."""
from __future__ import annotations

import pytest

from comfyart.config.settings import Settings


@pytest.mark.parametrize("auth, message", [
    ({"keys": [{"name": "a", "key": "short"}]}, "24 characters or more"),
    ({"keys": [{"name": "a"}]}, "give either key or key_sha256"),
    ({"keys": [{"name": "a", "key": "k" * 24, "key_sha256": "0" * 64}]}, "give either key or key_sha256"),
    ({"keys": [{"name": "a", "key_sha256": "nothex"}]}, "key_sha256"),
    ({"keys": [{"name": "a", "key": "k" * 24}, {"name": "a", "key": "j" * 24}]}, "unique"),
    ({"admin_user": "root"}, "go together"),
    ({"admin_user": "root", "admin_password": "short"}, "12 characters"),
    ({"keys": [{"name": "a", "key": "k" * 24, "role": "root"}]}, "role"),
])
def test_bad_auth_configuration_is_refused_by_field(auth, message):
    with pytest.raises(ValueError, match=message):
        Settings(auth=auth)
