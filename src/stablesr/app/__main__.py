"""``python -m stablesr.app ui ...`` starts the web UI."""

from stablesr.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
