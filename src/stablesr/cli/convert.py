"""``stablesr convert``: official checkpoint (or preset) -> a diffusers-style folder for ``upscale --checkpoint``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import EXIT_OK, add_model_flags, model_spec


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", parents=parents, help="convert official checkpoints to a diffusers-style folder",
                       description="Convert official checkpoint files (or a preset) into a folder that loads "
                                   "faster and safer (safetensors); use it with `upscale --checkpoint FOLDER`.")
    p.add_argument("checkpoint", metavar="CKPT", help="official checkpoint file, or a preset name")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder to write")
    add_model_flags(p, model_help="preset whose settings apply to CKPT", checkpoint_flag=False)
    return p


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not (out / "model_index.json").is_file():
        raise UsageError(f"-o {out}: exists and is not a stablesr model folder; not overwriting it")
    from ..hub import load_model
    from ..presets import PRESETS
    from ..runtime.console import Console
    from ..runtime.device import quiet_library_logs

    spec = model_spec(args)
    if not Path(args.checkpoint).exists():
        if args.checkpoint.lower().replace("_", "-") not in PRESETS:
            raise UsageError(f"{args.checkpoint}: no such checkpoint file or model preset")
        if args.model:
            raise UsageError("give either a preset name or --model with a checkpoint file, not both")
        spec = replace(spec, preset=args.checkpoint, checkpoint=None)  # convert the preset's (downloaded) files
    quiet_library_logs()
    pipe = load_model(spec, note=Console().note)
    pipe.save_pretrained(out)
    print(f"wrote {out}", flush=True)
    return EXIT_OK
