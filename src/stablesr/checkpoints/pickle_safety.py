"""Inert stand-ins for the Python objects that training checkpoints name, so they load with ``weights_only=True``.

The released StableSR files are whole PyTorch Lightning 1.4 training checkpoints. Beside the
``state_dict`` they hold the trainer's bookkeeping, and its pickle names Python objects that
``torch.load(weights_only=True)`` refuses by default: Lightning <= 1.4 keys callback states by
the callback *class* (``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``),
``hyper_parameters`` may be an OmegaConf ``DictConfig`` (its pickled state names
``omegaconf.base.ContainerMetadata``, ``typing.Any``, ``collections.defaultdict`` ...), and
monitored scores may be numpy scalars.

We only keep the ``state_dict``, so none of those objects is needed for real. Each allowed name
is mapped to a stand-in defined here: a :class:`StandIn` subclass that records the arguments and
state it is handed and has no other behaviour, or a plain (empty) ``dict``/``OrderedDict`` for the
dict-like names (their items are then filled in by the unpickler's own ``SETITEMS``). Nothing from the file, and
nothing from an installed Lightning or OmegaConf, is ever imported or called. Every name not
listed stays refused by torch's restricted unpickler (``os``/``posix``/``sys`` are refused by
torch before any allow-list is consulted).
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["STAND_IN_NAMES", "StandIn", "allowed_global_names", "refused_globals", "safe_globals", "stand_in_class"]


class StandIn:
    """Placeholder for an object a checkpoint describes: keeps its arguments and state, runs nothing.

    Example:
        >>> cls = stand_in_class("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")
        >>> cls("anything", 1).stands_for
        'pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint'
    """

    stands_for = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:  # noqa: PYI034 - the unpickler's NEWOBJ/REDUCE land here
        self = object.__new__(cls)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "state", None)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # BUILD: store, never interpret
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"<stand-in for {self.stands_for}>"


def _empty_dict(*_args: Any, **_kwargs: Any) -> dict:
    """``collections.defaultdict(factory)`` as a plain dict: the factory (a stand-in) is dropped, never called."""
    return {}


# Callback classes appear as dict keys (Lightning <= 1.4: ``callbacks[type(cb)] = state``): only
# the class object is referenced, never an instance. Lightning 1.4's trainer only stores callbacks
# whose ``on_save_checkpoint`` returns state (ModelCheckpoint, EarlyStopping, Timer, ...); the
# others are listed because the LDM/StableSR ``main.py`` installs them and forks may give them state.
_LIGHTNING_CALLBACKS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.timer.Timer",
    "pytorch_lightning.callbacks.progress.ProgressBar",
    "pytorch_lightning.callbacks.progress.tqdm_progress.TQDMProgressBar",
    "pytorch_lightning.callbacks.gradient_accumulation_scheduler.GradientAccumulationScheduler",
    "pytorch_lightning.callbacks.model_summary.ModelSummary",
    "pytorch_lightning.callbacks.stochastic_weight_avg.StochasticWeightAveraging",
    "main.SetupCallback",  # LDM / StableSR main.py
    "main.ImageLogger",
    "main.CUDACallback",
)
# OmegaConf 2.x containers (``hyper_parameters`` / ``hparams_type``): DictConfig/ListConfig pickle
# ``{"_metadata": ContainerMetadata, "_parent": ..., "_content": {key: node}}``; nodes pickle
# ``{"_metadata": Metadata, "_parent": ..., "_val": value}``; the metadata dataclasses hold
# ``ref_type``/``key_type``/``element_type`` (``typing.Any``, or ``typing.Dict``/``List``),
# ``object_type`` (``dict``/``list``/None), ``key_type`` (``int`` for lists) and ``resolver_cache``
# (``defaultdict(dict)``). Built-in types appear there only as *values*, so they map to stand-ins too
# (a file that tries to call ``builtins.dict(...)`` through them gets a stand-in, not a dict).
_OMEGACONF = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
    "typing.Any",
    "typing.Dict",
    "typing.List",
    "builtins.dict",
    "builtins.list",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
)
# numpy scalars/arrays as monitored scores (``best_model_score``, ``current_score``), numpy < 2 and >= 2 paths.
_NUMPY = (
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
)
# Other plain-data holders seen in hyper-parameters.
_MISC = (
    "argparse.Namespace",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
)
# Dict-like names, rebuilt as real (empty) dicts so the unpickler can fill in their items.
_DICT_LIKE: dict[str, Any] = {
    "collections.defaultdict": _empty_dict,  # REDUCE(defaultdict, (factory,)) + SETITEMS
    "pytorch_lightning.utilities.parsing.AttributeDict": OrderedDict,  # NEWOBJ(cls) + SETITEMS (+ BUILD)
}

STAND_IN_NAMES: tuple[str, ...] = (*_LIGHTNING_CALLBACKS, *_OMEGACONF, *_NUMPY, *_MISC, *_DICT_LIKE)


def stand_in_class(name: str) -> type[StandIn]:
    """A fresh :class:`StandIn` subclass for the global ``name`` (one class per name, so dict keys stay distinct)."""
    short = name.rsplit(".", 1)[-1]
    return type(short, (StandIn,), {"__module__": __name__, "__qualname__": f"StandIn[{name}]", "stands_for": name})


_STAND_INS: list[tuple[Any, str]] = [
    *((stand_in_class(n), n) for n in (*_LIGHTNING_CALLBACKS, *_OMEGACONF, *_NUMPY, *_MISC)),
    *((obj, n) for n, obj in _DICT_LIKE.items()),
]


# torch's allow-list is process-wide and its context manager removes our entries on exit, so two
# overlapping loads in different threads would pull the stand-ins from under each other.
_LOCK = threading.Lock()


@contextmanager
def safe_globals() -> Iterator[None]:
    """Context manager: ``torch.load(weights_only=True)`` inside it maps the listed names to the stand-ins.

    Loads inside it are serialised (they are quick with ``mmap=True``).

    Example:
        >>> import torch
        >>> with safe_globals():
        ...     pass  # torch.load(path, weights_only=True, mmap=True)
    """
    import torch

    with _LOCK, torch.serialization.safe_globals(_STAND_INS):
        yield


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _pickled_globals(stream: Any, pickles: int = 4) -> Iterator[str]:
    """The ``module.name`` globals a pickle names, in order: parsed with pickletools, never executed.

    Up to ``pickles`` consecutive pickles are read: torch's pre-1.6 format puts the object after
    three small header pickles.
    """
    for _ in range(pickles):
        memo: dict[int, Any] = {}
        pushed: list[Any] = [None, None]  # the last two values pushed, enough for STACK_GLOBAL's two strings
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name == "GLOBAL":
                    module, _, attr = str(arg).partition(" ")
                    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
                    yield f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"
                elif name == "STACK_GLOBAL":
                    if all(isinstance(v, str) for v in pushed):
                        yield f"{pushed[0]}.{pushed[1]}"
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = [pushed[1], memo.get(int(arg))]
                elif name != "FRAME":
                    pushed = [pushed[1], arg if name in _STRING_OPS else None]
        except Exception:  # noqa: BLE001 - end of file or damage: report what was found before it
            return


def refused_globals(path: str | Any, allowed: set[str], limit: int = 3) -> list[str]:
    """The first ``limit`` distinct globals a checkpoint's pickle names that are not in ``allowed`` (for messages)."""
    found: list[str] = []

    def scan(stream: Any) -> list[str]:
        for name in _pickled_globals(stream):
            if name not in allowed and name not in found:
                found.append(name)
                if len(found) == limit:
                    break
        return found

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return []
                with zf.open(member) as stream:
                    return scan(stream)
        with open(path, "rb") as stream:
            return scan(stream)
    except (OSError, zipfile.BadZipFile):
        return found


def allowed_global_names() -> set[str]:
    """Every global name a load under :func:`safe_globals` accepts: torch's defaults plus the stand-ins."""
    from torch import _weights_only_unpickler

    return set(_weights_only_unpickler._get_allowed_globals()) | set(STAND_IN_NAMES)
