"""``python -m stablesr.degradation make-testset HR_DIR OUT_DIR ...``."""

import sys

from .cli import main

sys.exit(main())
