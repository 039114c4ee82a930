"""Routes that serve files answer HEAD as well as GET: download tools and browsers ask HEAD first (its size, type
and name), and FastAPI, unlike Starlette, does not add HEAD to a GET route by itself."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """``@router.get(path, **options)`` that answers HEAD too: the same status and headers, no body (FileResponse
    sends none to a HEAD, and the server drops any other answer's). HEAD stays out of the OpenAPI document, where
    it would repeat the GET operation under the same id."""
    def register(endpoint: Endpoint) -> Endpoint:
        router.api_route(path, methods=["HEAD"], **{**options, "include_in_schema": False})(endpoint)
        return router.get(path, **options)(endpoint)
    return register
