"""The ComfyUI-compatible front door: ComfyUI's own HTTP routes and WebSocket, served by comfyart for the whole
cluster, so a ComfyUI client points at comfyart unchanged (PROTOCOL.md is the reference for every shape here)."""
