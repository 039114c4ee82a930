"""Where a reconnected event bridge goes on from (``cluster.bridge.resume_from``)."""
from __future__ import annotations

import pytest

from comfyart.cluster.bridge import Resume, resume_from


@pytest.mark.parametrize(("last", "first", "newest", "expected"), [
    ("5-0", "1-0", "9-0", Resume("5-0", lost=False)),  # the stream still holds what follows
    ("5-0", "1-0", "5-0", Resume("5-0", lost=False)),  # nothing new
    ("5-0", "5-0", "9-0", Resume("5-0", lost=False)),  # its oldest entry is the last one read
    ("5-0", "5-1", "9-0", Resume("9-0", lost=True)),  # trimmed past it
    ("5-0", "7-0", "9-0", Resume("9-0", lost=True)),
    ("5-0", None, "0-0", Resume("0-0", lost=True)),  # Redis came back empty
    ("5-3", "1-0", "5-2", Resume("5-2", lost=True)),  # came back without the newest entries
    ("0-0", "7-0", "9-0", Resume("0-0", lost=False)),  # read nothing yet: everything since is there to read
    ("0-0", None, "0-0", Resume("0-0", lost=False)),
])
def test_resume_from(last, first, newest, expected):
    assert resume_from(last, first, newest) == expected
