"""Fixtures of the store's tests: the stores on the test Redis, under the prefix ``test``."""
from __future__ import annotations

import pytest

from comfyart.store.queue import TaskQueue
from comfyart.store.stores import Stores
from comfyart.store.tasks import TaskStore


@pytest.fixture
def stores(redis_client) -> Stores:
    return Stores.on(redis_client, "test")


@pytest.fixture
def store(stores: Stores) -> TaskStore:
    return stores.tasks


@pytest.fixture
def queue(stores: Stores) -> TaskQueue:
    return stores.queue
