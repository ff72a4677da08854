"""``python -m adapterkit.cli``, as before the CLI became a package (``python -m adapterkit`` is the same)."""
import sys

from . import main

sys.exit(main())
