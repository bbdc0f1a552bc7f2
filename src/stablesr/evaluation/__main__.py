"""``python -m stablesr.evaluation eval|compare ...``."""

import sys

from .cli import main

sys.exit(main())
