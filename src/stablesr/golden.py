"""``python -m stablesr.golden DIR``: replay the golden test vectors (see :mod:`stablesr.testing.golden`)."""

import sys

from .testing.golden import main

if __name__ == "__main__":
    sys.exit(main())
