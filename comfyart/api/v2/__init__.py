"""Comfy API v2 (``/api/v2``) for the whole fleet: the contract of ``comfy-sdk`` and ``comfy-api-proxy``
(``shared/comfyui/API-V2.md``) served over comfyart's tasks. ``shapes`` (a task as a v2 Job, its outputs as assets,
list items and cursors), ``labels`` (job metadata rules) and ``errors`` (the error envelope and each code's HTTP
status) are pure: no I/O, no clock; the routes build on them."""
