"""The ``comfyart`` command: ``serve`` and ``keys`` here (``main``), the commands against a running daemon in
``remote``, logging in ``logs``."""
