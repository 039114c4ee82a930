"""Following every prompt comfyart submitted, from the backend's WebSocket and /history, into the task records."""
