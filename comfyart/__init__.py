"""comfyart: an elastic scheduler for fleets of ComfyUI backends."""

__version__ = "0.1.0"
