"""``python -m comfyart``: the same as the ``comfyart`` command."""
import sys

from comfyart.cli.main import main

sys.exit(main())
