"""Run plumbing shared by both stages: the accelerate setup and resumable training checkpoints.

A checkpoint is ``OUTPUT/checkpoints/checkpoint-<step>/``: accelerate's state (trained weights,
optimizer, every process's RNG states), ``trainer_state.json`` (step, data position), ``extra.pt``
(LR scheduler, EMA) and ``rank<r>.pt`` (per-process state such as the training-pair pool). It is
written into a temporary folder and renamed into place, so an interrupted save never leaves a
half checkpoint that ``latest`` would pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ._deps import StableSRError
from .config import MIXED_PRECISIONS

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def make_accelerator(cfg: Any, *, with_tracker: bool = True):
    """An :class:`accelerate.Accelerator` for ``cfg`` (a RunConfig): DDP, mixed precision, accumulation, tracker."""
    try:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration
    except ImportError:
        raise StableSRError("training needs accelerate: pip install 'stablesr[train]'") from None
    if cfg.mixed_precision not in MIXED_PRECISIONS:  # configs built in Python skip load_config's range check
        raise StableSRError(f"mixed_precision must be no, fp16 or bf16, got {cfg.mixed_precision!r}")
    if getattr(cfg, "num_threads", None):
        torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.output_dir)
    log_with = cfg.log_with if with_tracker else None
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            log_with = None
    # several processes without GPUs (torchrun / accelerate launch on CPUs): DDP over gloo
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, cpu=multi_cpu,
                       mixed_precision=cfg.mixed_precision, log_with=log_with,
                       project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest`` -> the newest complete checkpoint (None if there is none yet); a path -> that folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise StableSRError(f"{path}: not a training checkpoint (no trainer_state.json)")
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, trainer_state: dict, extra: dict,
                    rank_state: dict, total_limit: int | None = None) -> Path:
    """Write checkpoint-<step> (all processes call this)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(rank_state, tmp / f"rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(extra, tmp / "extra.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> tuple[dict, dict, dict]:
    """Restore accelerate's state; returns (trainer_state, extra, this process's rank state)."""
    accelerator.load_state(str(path))
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    extra = torch.load(path / "extra.pt", map_location="cpu", weights_only=True)
    rank_file = path / f"rank{accelerator.process_index}.pt"
    if trainer_state.get("num_processes") != accelerator.num_processes:
        raise StableSRError(f"{path}: saved by {trainer_state.get('num_processes')} processes, resuming with "
                            f"{accelerator.num_processes}; resume with the same number of processes")
    rank_state = torch.load(rank_file, map_location="cpu", weights_only=True) if rank_file.is_file() else {}
    return trainer_state, extra, rank_state


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def log_step(acc: Any, cfg: Any, out: Path, step: int, entry: dict[str, float]) -> None:
    """Send ``entry`` to the tracker (when ``cfg.log_with``) and, on the main process, to ``train_log.jsonl``."""
    if cfg.log_with:
        acc.log(entry, step=step)
    if acc.is_main_process:
        with open(out / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"step": step} | entry) + "\n")
