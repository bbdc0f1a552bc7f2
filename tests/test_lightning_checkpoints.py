"""Whole PyTorch Lightning training checkpoints (what the released StableSR files are) load safely.

The files are built here from the tiny golden weights the way Lightning 1.4 and 1.5+ write them:
callback states keyed by the callback class (1.4) or by a string (1.5+), Adam optimizer states,
LR-scheduler states, OmegaConf hyper-parameters, numpy scores, loops state. ``pytorch_lightning``
and ``omegaconf`` are not installed, so stand-in modules with the real module paths (and, for
OmegaConf, the real pickled state layout) exist in ``sys.modules`` only while a file is written.
"""

from __future__ import annotations

import builtins
import os
import pickle
import pickletools
import subprocess
import sys
import types
import typing
import zipfile
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stablesr.checkpoints.loading import load_state_dict
from stablesr.errors import CheckpointError

# ---------------------------------------------------------------------------------------------
# Stand-in modules, present only while a test writes (or deliberately arms) a file


def _write_marker(path: str) -> None:
    """What a malicious or real trainer object would do if its code ran on load."""
    Path(path).write_text("code from the checkpoint ran")


class ModelCheckpoint:
    """Plays pytorch_lightning's ModelCheckpoint: constructing or restoring it writes a marker file."""

    def __init__(self, marker: str) -> None:
        _write_marker(marker)

    def __setstate__(self, state: dict) -> None:
        _write_marker(state["marker"])


class _Instance:
    """Pickles as a call of ``factory(*args)``: how an object whose class would run code is stored."""

    def __init__(self, factory: Any, *args: Any) -> None:
        self.factory, self.args = factory, args

    def __reduce__(self):
        return (self.factory, self.args)


@dataclass
class Metadata:  # omegaconf.base.Metadata (a dataclass: pickled as NEWOBJ + BUILD of its __dict__)
    ref_type: Any
    object_type: Any
    optional: bool
    key: Any
    flags: dict | None = None
    flags_root: bool = False
    resolver_cache: dict = field(default_factory=lambda: defaultdict(dict))


@dataclass
class ContainerMetadata(Metadata):  # omegaconf.base.ContainerMetadata
    key_type: Any = None
    element_type: Any = None


class _Node:
    """OmegaConf's Node.__getstate__: the instance dict without ``_flags_cache``."""

    def __init__(self, parent: Any, metadata: Metadata, **content: Any) -> None:
        self.__dict__.update(_metadata=metadata, _parent=parent, _flags_cache=None, **content)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_flags_cache")
        return state


class AnyNode(_Node):
    pass


class DictConfig(_Node):
    pass


class ListConfig(_Node):
    pass


def to_omegaconf(value: Any, parent: Any = None, key: Any = None) -> Any:
    """What ``OmegaConf.create(value)`` holds for a YAML-like value (untyped: AnyNode leaves)."""
    if isinstance(value, dict):
        node = DictConfig(parent, ContainerMetadata(typing.Any, dict, True, key, {}, key_type=typing.Any,
                                                     element_type=typing.Any), _content={})
        node._content.update({k: to_omegaconf(v, node, k) for k, v in value.items()})
        return node
    if isinstance(value, list):
        node = ListConfig(parent, ContainerMetadata(typing.Any, list, True, key, {}, key_type=int,
                                                     element_type=typing.Any), _content=[])
        node._content.extend(to_omegaconf(v, node, i) for i, v in enumerate(value))
        return node
    return AnyNode(parent, Metadata(typing.Any, None, True, key, {}), _val=value)


@contextmanager
def stand_in_modules(attrs: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Install modules (dotted name -> members) in ``sys.modules`` for the duration, then restore everything."""
    modules: dict[str, types.ModuleType] = {}
    names = {}
    for name, members in attrs.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for attr, obj in members.items():
            names[obj] = (obj.__module__, obj.__qualname__)
            obj.__module__, obj.__qualname__ = name, attr  # so pickle records the real library's path
            setattr(modules[name], attr, obj)
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
        for obj, (module, qualname) in names.items():
            obj.__module__, obj.__qualname__ = module, qualname


LIGHTNING = {"pytorch_lightning.callbacks.model_checkpoint": {"ModelCheckpoint": ModelCheckpoint}}
OMEGACONF = {
    "omegaconf.base": {"Metadata": Metadata, "ContainerMetadata": ContainerMetadata},
    "omegaconf.nodes": {"AnyNode": AnyNode},
    "omegaconf.dictconfig": {"DictConfig": DictConfig},
    "omegaconf.listconfig": {"ListConfig": ListConfig},
}
HPARAMS = {"linear_start": 0.00085, "timesteps": 1000, "monitor": "val/loss_simple_ema", "scale_factor": 0.18215,
           "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModelDualcondV2",
                           "params": {"channel_mult": [1, 2, 4, 4], "use_checkpoint": True, "ckpt": None}}}


# ---------------------------------------------------------------------------------------------
# Training checkpoints in the two Lightning layouts


def _adam_states(trainable: list[torch.Tensor], lr: float) -> dict:
    state = {i: {"step": torch.tensor(1234.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
             for i, p in enumerate(trainable)}
    group = {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "params": list(range(len(trainable)))}
    return {"state": state, "param_groups": [group]}


def _lambda_lr_state(lr: float) -> dict:
    return {"base_lrs": [lr], "last_epoch": 1234, "verbose": False, "_step_count": 1235,
            "_get_lr_called_within_step": False, "_last_lr": [lr], "lr_lambdas": [None]}


def _trainable(sd: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [v for k, v in sd.items() if k.startswith(("structcond_stage_model.", "decoder.fusion_layer")) or "spade" in k]


def lightning14_checkpoint(sd: dict[str, torch.Tensor], path: Path, *, marker: Path | None = None,
                           n_optimizers: int = 1, legacy_format: bool = False) -> Path:
    """Lightning 1.4 ``dump_checkpoint``: callbacks keyed by class, OmegaConf hparams, numpy scores."""
    with stand_in_modules({**LIGHTNING, **OMEGACONF}):
        callback_state = {"monitor": None, "best_model_score": None, "best_model_path": "",
                          "current_score": np.float64(0.0123), "dirpath": "/logs/2023/checkpoints",
                          "kth_value": np.array([0.5, 0.25], dtype=np.float32)}
        ckpt = {
            "epoch": 117, "global_step": 24000, "pytorch-lightning_version": "1.4.2",
            "state_dict": OrderedDict(sd),
            "callbacks": {ModelCheckpoint: callback_state},
            "optimizer_states": [_adam_states(_trainable(sd), 5e-5) for _ in range(n_optimizers)],
            "lr_schedulers": [_lambda_lr_state(5e-5)],
            "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                         "growth_interval": 2000, "_growth_tracker": 17},
            "hyper_parameters": to_omegaconf(HPARAMS), "hparams_type": DictConfig,
        }
        if marker is not None:  # an object the real class would restore with code: must stay inert
            ckpt["callbacks"]["restored"] = _Instance(ModelCheckpoint, str(marker))
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def lightning15_checkpoint(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Lightning >= 1.5: string callback keys, loops state, plain-dict hparams (no stand-in modules needed)."""
    key = ("ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
           "'train_time_interval': None, 'save_on_train_epoch_end': True}")
    progress = {"total": {"ready": 5, "started": 5, "processed": 5, "completed": 5},
                "current": {"ready": 5, "started": 5, "processed": 5, "completed": 5}}
    ckpt = {
        "epoch": 139, "global_step": 30000, "pytorch-lightning_version": "1.6.5", "state_dict": sd,
        "callbacks": {key: {"monitor": None, "best_model_score": None, "best_model_path": "", "current_score": None,
                            "dirpath": "/logs/ckpt", "best_k_models": {}, "kth_best_model_path": "",
                            "kth_value": torch.tensor(float("inf")), "last_model_path": "/logs/ckpt/last.ckpt"}},
        "optimizer_states": [_adam_states(_trainable(sd), 5e-5)],
        "lr_schedulers": [_lambda_lr_state(5e-5)],
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": progress,
                               "epoch_loop.batch_progress": progress, "epoch_loop.state_dict": {"_batches_that_stepped": 30000}}},
        "hparams_name": "kwargs", "hyper_parameters": HPARAMS,
    }
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def golden_sd(tiny_weights: dict[str, Path]) -> dict[str, dict[str, torch.Tensor]]:
    return {"ldm": load_state_dict(tiny_weights["ldm"]), "cfw": load_state_dict(tiny_weights["cfw"])}


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k, value in want.items():
        assert got[k].dtype == value.dtype and torch.equal(got[k], value), k


WRITERS = {"lightning14": lightning14_checkpoint, "lightning15": lightning15_checkpoint,
           "lightning14_two_optimizers": lambda sd, path: lightning14_checkpoint(sd, path, n_optimizers=2),
           "lightning14_pre_zip_format": lambda sd, path: lightning14_checkpoint(sd, path, legacy_format=True)}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_training_checkpoint_gives_exactly_the_state_dict(layout: str, golden_sd: dict, tmp_path: Path) -> None:
    for role in ("ldm", "cfw"):
        path = WRITERS[layout](golden_sd[role], tmp_path / f"{role}.ckpt")
        _assert_same(load_state_dict(path), golden_sd[role])
        if "pre_zip" not in layout:
            _assert_same(load_state_dict(path, mmap=False), golden_sd[role])


def _pickled_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_lightning14_checkpoint_needs_the_stand_ins(golden_sd: dict, tmp_path: Path) -> None:
    """The file names what a real Lightning 1.4 + OmegaConf 2.1 checkpoint names; plain weights_only refuses it."""
    path = lightning14_checkpoint(golden_sd["ldm"], tmp_path / "pl14.ckpt")
    names = _pickled_globals(path)
    assert {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", "omegaconf.dictconfig.DictConfig",
            "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata",
            "omegaconf.nodes.AnyNode", "typing.Any", "collections.defaultdict", "__builtin__.dict",
            "__builtin__.list", "__builtin__.long", "numpy.dtype"}  # protocol 2 spellings <= names, names
    assert any(n.endswith("multiarray.scalar") for n in names) and any(n.endswith("_reconstruct") for n in names)
    with pytest.raises(Exception, match="ModelCheckpoint|omegaconf|numpy"):
        torch.load(path, weights_only=True)


def test_trainer_objects_stay_inert_even_with_lightning_installed(golden_sd: dict, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = lightning14_checkpoint(golden_sd["ldm"], tmp_path / "pl14.ckpt", marker=marker)
    with stand_in_modules({**LIGHTNING, **OMEGACONF}):  # as if pytorch_lightning and omegaconf were importable
        _assert_same(load_state_dict(path), golden_sd["ldm"])
        assert not marker.exists()
        torch.load(path, weights_only=False)  # the fixture is armed: an unrestricted load runs the class's code
    assert marker.exists()


@pytest.mark.slow
def test_training_checkpoints_upscale_like_the_golden_files(golden_sd: dict, tiny_weights: dict[str, Path],
                                                            tmp_path: Path) -> None:
    from PIL import Image

    from stablesr.pipeline import StableSRPipeline

    ldm = lightning14_checkpoint(golden_sd["ldm"], tmp_path / "stablesr_000117.ckpt")
    cfw = lightning15_checkpoint(golden_sd["cfw"], tmp_path / "vqgan_cfw_00011.ckpt")
    image = Image.fromarray((np.random.default_rng(0).random((24, 20, 3)) * 255).astype(np.uint8))
    outputs = []
    for pair in ((tiny_weights["ldm"], tiny_weights["cfw"]), (ldm, cfw)):
        pipe = StableSRPipeline.from_single_file(pair[0], cfw_ckpt=pair[1], config=tiny_weights["config"],
                                                 prompt_embeds=tiny_weights["prompt_embeds"])
        pipe.set_progress_bar_config(disable=True)
        outputs.append(pipe(image, upscale=2.0, num_inference_steps=1, generator=torch.Generator().manual_seed(3),
                            output_type="np").images)
    assert outputs[0].shape == (1, 48, 40, 3)
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Everything else is refused, unexecuted, in one line naming the file and the global


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return message


PAYLOADS = {  # name -> (factory, args builder, the global the pickle names)
    "os_system": (os.system, lambda m: (f"touch '{m}'",), f"{os.system.__module__}.system"),  # posix.system
    "eval": (builtins.eval, lambda m: (f"open({str(m)!r}, 'w')",), "eval"),
    "popen": (subprocess.Popen, lambda m: (["touch", str(m)],), "subprocess.Popen"),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_dangerous_globals_in_a_training_checkpoint_are_refused(name: str, golden_sd: dict, tmp_path: Path) -> None:
    factory, args, named = PAYLOADS[name]
    marker = tmp_path / "pwned"
    for zip_format in (True, False):  # torch >= 1.6 zip files and the older single-pickle-stream format
        path = tmp_path / f"{name}_{zip_format}.ckpt"
        torch.save({"state_dict": golden_sd["cfw"], "callbacks": {"x": _Instance(factory, *args(marker))}}, path,
                   _use_new_zipfile_serialization=zip_format)
        message = _refusal(path)
        assert named in message and "refused" in message, message
        assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("protocol", [2, 5])
def test_dangerous_globals_in_plain_pickles_are_named(protocol: int, tmp_path: Path) -> None:
    """Pickles not written by torch.save (protocol 4+ uses STACK_GLOBAL) are refused with the global named too."""
    for name, (factory, args, named) in PAYLOADS.items():
        marker = tmp_path / "pwned"
        path = tmp_path / f"{name}.pth"
        path.write_bytes(pickle.dumps({"callbacks": {"x": _Instance(factory, *args(marker))}}, protocol=protocol))
        assert named in _refusal(path)
        assert not marker.exists()


def test_unlisted_lightning_global_is_refused(golden_sd: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "pl_global.ckpt"
    def load(path: str) -> None:
        _write_marker(path)

    with stand_in_modules({"pytorch_lightning.utilities.cloud_io": {"load": load}}):
        torch.save({"state_dict": golden_sd["cfw"], "x": _Instance(load, str(marker))}, path)
        message = _refusal(path)
    assert "pytorch_lightning.utilities.cloud_io.load" in message, message
    assert not marker.exists()


def test_allowed_names_used_as_calls_do_nothing(golden_sd: dict, tmp_path: Path) -> None:
    """A file that calls an allow-listed name with a payload as argument gets a stand-in; nothing runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "abuse.ckpt"
    with stand_in_modules(LIGHTNING):
        torch.save({"state_dict": golden_sd["cfw"],
                    "a": _Instance(ModelCheckpoint, str(marker)),
                    "b": _Instance(defaultdict, ModelCheckpoint)}, path)
    _assert_same(load_state_dict(path), golden_sd["cfw"])
    assert not marker.exists()
