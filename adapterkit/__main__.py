"""``python -m adapterkit``: the CLI, for launchers that start a module (torchrun -m adapterkit ...)."""
import sys

from .cli import main

sys.exit(main())
