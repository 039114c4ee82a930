"""The ComfyUI wire: its message formats (``protocol``) and validation (``validate``), both pure, and the client
of one backend (``client``)."""
