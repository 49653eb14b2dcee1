"""``python -m iommusim``: the ``iommusim`` command line, with the same exit codes."""

from __future__ import annotations

import sys

from iommusim.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
