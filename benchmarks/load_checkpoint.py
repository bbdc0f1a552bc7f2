"""Peak memory of reading a full-size official training checkpoint with ``load_state_dict``.

    python benchmarks/load_checkpoint.py                  # full size: writes ~6.5 GB to /tmp, deletes it after
    python benchmarks/load_checkpoint.py --scale 0.1      # a tenth of every tensor (same layout, ~0.65 GB)

The file is built like the released ``stablesr_000117.ckpt`` (6,481,647,231 bytes): the
state dict of ``shared/reference/manifests/stablesr_text_T_512.json`` plus, in Lightning 1.4
layout, AdamW ``exp_avg``/``exp_avg_sq`` for the trainable parts (the time-aware encoder
``structcond_stage_model.*`` and the SFT layers, the UNet's ``*spade*`` parameters), an LR
scheduler state and a ModelCheckpoint state keyed by a callback class. Tensor values are
irrelevant to memory and left uninitialised. Building and loading run in separate fresh
processes, so the reported peak resident set (``ru_maxrss``) is the loader's own. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared" / "reference" / "manifests" / "stablesr_text_T_512.json"


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def build(manifest: Path, path: Path, scale: float) -> None:
    import torch

    keys = json.loads(manifest.read_text())["keys"]
    sd, trainable = {}, []
    for k, meta in keys.items():
        shape = meta["shape"] if scale == 1 else [max(1, math.ceil(math.prod(meta["shape"]) * scale))]
        sd[k] = torch.empty(shape, dtype=torch.float32)
        if meta["kind"] == "parameter" and (k.startswith("structcond_stage_model.") or "spade" in k):
            trainable.append(sd[k])
    adam = {i: {"step": torch.tensor(24000.0), "exp_avg": torch.empty_like(p), "exp_avg_sq": torch.empty_like(p)}
            for i, p in enumerate(trainable)}
    group = {"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
             "params": list(range(len(trainable)))}

    # Lightning <= 1.4 keys callback states by the class: a module with the real path exists only while writing.
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    module.ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": module.__name__})
    sys.modules.update({"pytorch_lightning": types.ModuleType("pytorch_lightning"),
                        "pytorch_lightning.callbacks": types.ModuleType("pytorch_lightning.callbacks"),
                        module.__name__: module})
    ckpt = {"epoch": 117, "global_step": 24000, "pytorch-lightning_version": "1.4.2", "state_dict": sd,
            "callbacks": {module.ModelCheckpoint: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                                   "current_score": None, "dirpath": "/logs/checkpoints"}},
            "optimizer_states": [{"state": adam, "param_groups": [group]}],
            "lr_schedulers": [{"base_lrs": [5e-5], "last_epoch": 24000, "_step_count": 24001, "verbose": False,
                               "_get_lr_called_within_step": False, "_last_lr": [5e-5], "lr_lambdas": [None]}]}
    torch.save(ckpt, path)


def measure(path: Path) -> dict:
    import torch

    from stablesr.checkpoints.loading import load_state_dict

    baseline = _rss_bytes()
    start = time.perf_counter()
    sd = load_state_dict(path)
    load_s = time.perf_counter() - start
    after_load_peak = _peak_rss_bytes()
    start = time.perf_counter()
    checksum = 0.0
    for t in sd.values():  # read every kept weight once, as copying it into a model would
        checksum += float(t.view(-1)[:: max(1, 4096 // t.element_size())].sum()) if t.numel() else 0.0
    touch_s = time.perf_counter() - start
    sd_bytes = sum(t.numel() * t.element_size() for t in sd.values())
    return {"state_dict_bytes": sd_bytes, "tensors": len(sd), "baseline_rss_bytes": baseline,
            "peak_rss_after_load_bytes": after_load_peak, "peak_rss_after_reading_weights_bytes": _peak_rss_bytes(),
            "load_s": round(load_s, 2), "read_weights_s": round(touch_s, 2), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--path", type=Path, default=Path("/tmp/stablesr_bench_training.ckpt"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every tensor's size (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the file afterwards")
    parser.add_argument("--_build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._build:
        return build(args.manifest, args.path, args.scale)
    if args._measure:
        return print(json.dumps(measure(args.path)))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    me = [sys.executable, __file__, "--manifest", str(args.manifest), "--path", str(args.path)]
    try:
        start = time.perf_counter()
        subprocess.run([*me, "--scale", str(args.scale), "--_build"], check=True, env=env)
        build_s = time.perf_counter() - start
        out = subprocess.run([*me, "--_measure"], check=True, env=env, capture_output=True, text=True).stdout
        result = {"benchmark": "load_checkpoint", "scale": args.scale, "file_bytes": args.path.stat().st_size,
                  **json.loads(out.strip().splitlines()[-1]), "build_s": round(build_s, 1)}
        result["peak_over_state_dict"] = round(
            (result["peak_rss_after_reading_weights_bytes"] - result["baseline_rss_bytes"]) / result["state_dict_bytes"], 3)
        print(json.dumps(result))
    finally:
        if not args.keep:
            args.path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
