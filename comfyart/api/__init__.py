"""The HTTP face: comfyart's REST API, live events, the dashboard, and ComfyUI's own API for the cluster."""
