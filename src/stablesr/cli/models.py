"""``stablesr models``: the presets, their files, whether each is cached (with its size), the licence."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    return sub.add_parser("models", parents=parents, help="list model presets and whether they are cached")


def run(args: argparse.Namespace) -> int:
    from huggingface_hub import constants

    from ..hub import cached_files
    from ..presets import DEFAULT_PRESET, PRESETS

    for preset in PRESETS.values():
        cached = cached_files(preset)
        default = " (default)" if preset.name == DEFAULT_PRESET else ""
        print(f"{preset.name}{default}: {preset.description}")
        print(f"  settings: {preset.steps} steps, fidelity {preset.fidelity}, colour fix {preset.color_fix}, "
              f"{preset.prediction_type}-prediction, {preset.image_size} px")
        for hub_file in preset.files:
            path = cached[hub_file.name]
            state = f"cached, {_size(path.stat().st_size)}" if path else f"not cached, {_size(hub_file.size_bytes)}"
            print(f"  {preset.repo_id}/{hub_file.name}: {state}")
        print(f"  licence: {preset.licence}")
    print(f"cache: {constants.HF_HUB_CACHE}; fetch a model with `stablesr download NAME`")
    return EXIT_OK


def _size(n: int | None) -> str:
    """Decimal units, as the hub shows sizes."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
