"""Safe reading of checkpoint files: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickles.

Whole training checkpoints (Lightning 1.x, as the official StableSR files are) load too: the
trainer objects their pickle names are mapped to inert stand-ins (:mod:`.pickle_safety`), the
file is memory-mapped, and only the ``state_dict`` is kept, so optimizer state is never read
from disk.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from .pickle_safety import allowed_global_names, refused_globals, safe_globals

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "params_ema", "params", "model")
# torch's messages for a refused global: not allow-listed, or in a module it always blocks (os, posix, sys)
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+) whose module")


def load_state_dict(path: str | Path, *, mmap: bool | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors on the CPU.

    ``.safetensors`` files are read directly. Anything else is read with
    ``torch.load(weights_only=True)``: tensors, containers and plain numbers only, so a file
    that would need to import or call arbitrary Python objects is refused, never executed.
    The objects a Lightning 1.x / OmegaConf / LDM training checkpoint names (callback classes,
    ``DictConfig`` hyper-parameters, numpy scores; the list is in :mod:`.pickle_safety`) are
    read as inert stand-ins and dropped. Lightning's ``{"state_dict": ...}`` wrapper (and
    similar) is unwrapped; optimizer states and the rest are discarded.

    Zip-format files (torch >= 1.6) are memory-mapped: the returned tensors are views of the
    file's pages, read from disk when first used, and the parts that are dropped (optimizer
    state) are never read at all. ``mmap=False`` reads everything into memory instead.

    Example:
        >>> sd = load_state_dict("stablesr_turbo.ckpt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size < 200 and path.read_bytes().startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path}: this is a git-lfs pointer, not the weights; fetch the real file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    use_mmap = zipfile.is_zipfile(path) if mmap is None else mmap
    try:
        with safe_globals():
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        found = _REFUSED_GLOBAL.search(text)
        names = refused_globals(path, allowed_global_names())  # all of them (up to 3), parsed, not run
        if not names and found:
            names = [found.group(1) or found.group(2)]
        if not names:  # not a pickle of objects we refuse: the file is damaged or of another format
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or unknown format)") from None
        what = f"the Python object {names[0]}" if len(names) == 1 else f"Python objects ({', '.join(names)})"
        raise CheckpointError(
            f"{path}: refused to load: it needs {what} unpickled, which could run arbitrary code; "
            "use a .safetensors copy or convert it where you trust it"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files, wrong formats
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    state = unwrap_state_dict(obj, path)
    del obj  # the optimizer states, callbacks and hyper-parameters go now; only the tensors kept stay mapped
    return state


def unwrap_state_dict(obj: object, path: object = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside common checkpoint containers (Lightning, EMA wrappers)."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: no state dict found in the checkpoint")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return tensors
