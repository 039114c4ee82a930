"""``python -m comfyart``: the same as the ``comfyart`` command."""
import sys

from .cli import main

sys.exit(main())
