"""``python -m stablesr.training train sft ...`` (also what ``accelerate launch -m`` runs)."""

import sys

from .cli import main

sys.exit(main())
