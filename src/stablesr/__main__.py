"""``python -m stablesr ...`` runs the command line (also what ``torchrun -m stablesr`` starts on each rank)."""

from stablesr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
