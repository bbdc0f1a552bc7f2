"""Command line: ``stablesr train sft|cfw`` and ``stablesr make-cfw-data``.

Two command entries for :data:`stablesr.cli.COMMANDS`: :data:`TRAIN` and :data:`MAKE_CFW_DATA`. Every
config field is a flag (``--max-steps 100``, ``--data.gt-size 256``); see ``--help``. Multi-GPU:
``accelerate launch -m stablesr train sft ...`` or ``torchrun ... -m stablesr train sft ...``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import SimpleNamespace

from ..training.config import CFWTrainConfig, MakeCFWDataConfig, SFTTrainConfig, add_config_flags, config_from_args


def run_train_sft(args: argparse.Namespace) -> int:
    from ..training.sft import train_sft

    cfg = config_from_args(SFTTrainConfig, args)
    result = train_sft(cfg)
    if result.model_dir is not None:
        print(f"trained {result.global_step} steps; model: {result.model_dir}"
              + (f"; official checkpoint: {result.official_ckpt}" if result.official_ckpt else ""))
    return 0


def run_train_cfw(args: argparse.Namespace) -> int:
    from ..training.cfw import train_cfw

    cfg = config_from_args(CFWTrainConfig, args)
    result = train_cfw(cfg)
    if result.model_dir is not None:
        print(f"trained {result.global_step} steps; CFW weights: {result.model_dir}")
    return 0


def run_make_cfw_data(args: argparse.Namespace) -> int:
    from ..training.cfw_data import make_cfw_data

    cfg = config_from_args(MakeCFWDataConfig, args)
    report = make_cfw_data(cfg)
    print(f"{report.written} pairs written, {report.existing} already there, {report.skipped} skipped (NaN) "
          f"in {cfg.output_dir}")
    return 0


def register_train(subparsers: argparse._SubParsersAction,
                   parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add ``train`` with its stages ``sft`` and ``cfw``; returns the ``train`` parser."""
    parents = list(parents)
    train = subparsers.add_parser("train", parents=parents, help="train StableSR (stage 1: sft, stage 2: cfw)",
                                  description="Train StableSR on your own photos. Multi-GPU: `accelerate launch "
                                              "-m stablesr train sft ...` (or torchrun).")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    sft = stages.add_parser("sft", parents=parents, help="stage 1: time-aware encoder + SFT layers",
                            description="Stage 1: the time-aware encoder and the SFT layers train on a frozen "
                                        "SD-2.x UNet (official recipe by default).")
    add_config_flags(sft, SFTTrainConfig)
    sft.set_defaults(func=run_train_sft, handler=run_train_sft)
    cfw = stages.add_parser("cfw", parents=parents, help="stage 2: CFW fusion layers",
                            description="Stage 2: only the CFW fusion layers (and the discriminator) train, on "
                                        "a folder from `make-cfw-data`.")
    add_config_flags(cfw, CFWTrainConfig)
    cfw.set_defaults(func=run_train_cfw, handler=run_train_cfw)
    return train


def register_make_cfw_data(subparsers: argparse._SubParsersAction,
                           parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add ``make-cfw-data``; returns its parser."""
    data = subparsers.add_parser("make-cfw-data", parents=list(parents), help="generate stage-2 training data",
                                 description="Run a stage-1 model on degraded pairs and save inputs/, gts/, "
                                             "latents/, samples/ (official layout); sharded over processes, "
                                             "resumable.")
    add_config_flags(data, MakeCFWDataConfig)
    data.set_defaults(func=run_make_cfw_data, handler=run_make_cfw_data)
    return data


def run(args: argparse.Namespace) -> int:
    """Run whichever training command ``args`` selected (the leaf parsers set ``func``)."""
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        again = ("run the same command again: finished pairs are kept" if args.func is run_make_cfw_data
                 else "continue with --resume-from-checkpoint latest")
        print(f"interrupted; {again}", flush=True)
        raise


# Plug-ins in the shape of the main CLI's COMMANDS entries (``register(sub, parents) -> parser`` + ``run``).
TRAIN = SimpleNamespace(register=register_train, run=run)
MAKE_CFW_DATA = SimpleNamespace(register=register_make_cfw_data, run=run)
