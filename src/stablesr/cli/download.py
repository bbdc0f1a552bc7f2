"""``stablesr download MODEL...``: fetch presets into the Hugging Face cache and print where they are."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("download", parents=parents, help="fetch a model's weights into the Hugging Face cache",
                       description="Fetch preset weights (or check they are cached, with --offline).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="preset name(s), or all")
    p.add_argument("--offline", action="store_true", help="only check the cache")
    return p


def run(args: argparse.Namespace) -> int:
    from ..hub import download
    from ..presets import PRESETS, resolve_preset

    names = list(PRESETS) if [m.lower() for m in args.models] == ["all"] else args.models
    presets = [resolve_preset(name) for name in names]  # all names checked before any download
    for preset in presets:
        for name, path in download(preset, offline=args.offline).items():
            print(f"{preset.name}: {name} -> {path}", flush=True)
    return EXIT_OK
