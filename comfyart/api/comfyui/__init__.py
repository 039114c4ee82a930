"""ComfyUI's HTTP routes and WebSocket, served by comfyart for the whole cluster."""
