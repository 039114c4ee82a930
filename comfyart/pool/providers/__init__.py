"""Ways to run ComfyUI backends: containers on Docker hosts, processes on this machine."""
