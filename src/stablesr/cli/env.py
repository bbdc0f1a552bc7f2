"""``stablesr env``: versions, devices and cache locations (what a bug report needs)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import EXIT_OK, version

_PACKAGES = ("stablesr", "torch", "diffusers", "transformers", "huggingface_hub", "safetensors", "accelerate",
             "opencv-python-headless", "pillow", "numpy", "pyyaml")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    return sub.add_parser("env", parents=parents, help="versions, devices and cache locations (for bug reports)")


def run(args: argparse.Namespace) -> int:
    import platform

    import torch
    from huggingface_hub import constants

    from ..hub import env_offline
    from ..paths import stablesr_home

    for package in _PACKAGES:
        print(f"{package}: {version(package)}")
    print(f"python: {platform.python_version()} ({sys.executable})")
    print(f"platform: {platform.platform()}")
    print(f"cuda available: {'yes' if torch.cuda.is_available() else 'no'} "
          f"(torch CUDA build: {torch.version.cuda or 'none, CPU-only'})")
    for line in _device_lines(torch):
        print(f"device: {line}")
    print(f"hf cache: {constants.HF_HUB_CACHE}")
    print(f"hf offline: {'yes' if env_offline() else 'no'} (HF_HUB_OFFLINE)")
    print(f"stablesr home: {stablesr_home()}")
    launch = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    print(f"distributed: {', '.join(f'{k}={v}' for k, v in launch.items()) or 'no (single process)'}")
    return EXIT_OK


def _device_lines(torch: Any) -> list[str]:
    lines = [f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    return lines
