"""``python -m nbflow``: the ``nbflow`` command."""

from __future__ import annotations

import sys

from nbflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
