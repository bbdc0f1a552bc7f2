"""Training configs: dataclasses with the official recipe as defaults, loadable from YAML, overridable per flag.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags. Every field has a
flag: top-level fields as ``--max-steps``, nested ones as ``--data.gt-size`` / ``--optim.lr``.
Flag values are parsed as YAML scalars/lists (``--data.train-dirs "[a, b]"``, ``--ema-decay null``).

Example:
    >>> cfg = load_config(SFTTrainConfig, None, {"max_steps": 10, "optim.lr": 1e-4})
    >>> cfg.max_steps, cfg.optim.lr, cfg.optim.weight_decay
    (10, 0.0001, 0.01)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StableSRError

T = TypeVar("T")


class ConfigError(StableSRError):
    """A training config file or flag is wrong (the message names the field)."""


@dataclass
class ModelConfig:
    """Where the weights come from.

    ``base``: an official StableSR checkpoint (fine-tune), an official-format SD-2.x checkpoint, a
    diffusers SD-2.x folder or hub id (e.g. ``stabilityai/sd-turbo``); for the last two the time-aware
    encoder and SFT layers start fresh with the official init. ``config``: official-style model YAML/JSON
    when the architecture is not the released one (the tiny test models); ``parameterization`` overrides
    the prediction type (``eps``/``v``; default: the config's, else ``v`` for 768 px bases).
    """

    base: str = ""
    config: str | None = None
    parameterization: str | None = None
    image_size: int | None = None
    reinit_stablesr_modules: bool = False  # start encoder + SFT fresh even when the base has them
    prompt_embeds: str | None = None  # precomputed empty-prompt context (bases without a text encoder)
    cfw_checkpoint: str | None = None  # CFW decoder put into the exported pipeline (else the base's plain VAE)
    cfw_config: str | None = None
    revision: str | None = None


@dataclass
class DataConfig:
    """Stage-1 data (OFFICIAL.md 6.1/6.2 defaults): GT photo folders (or webdataset shards), degraded on the fly."""

    train_dirs: list[str] = field(default_factory=list)
    face_dirs: list[str] = field(default_factory=list)  # face folders mixed in (official: FFHQ)
    num_face: int = 10000  # first N sorted files of the face folders
    shards: list[str] = field(default_factory=list)  # webdataset tar shards (brace patterns allowed): streaming
    val_dirs: list[str] = field(default_factory=list)
    num_val_images: int = 4
    gt_size: int = 512
    use_hflip: bool = True
    min_side: int = 0  # skip images whose shorter side is below this (official rejects area < 384^2)
    degradation: str = "realesrgan"  # preset of stablesr.degradation (realesrgan, realesrgan-768v, face, bicubic)
    use_usm: bool | None = None  # None: the preset's (realesrgan: on)
    no_degradation_prob: float | None = None  # None: the preset's (realesrgan: 0.01)
    queue_size: int = 180  # training-pair pool; 0 disables
    num_workers: int = 2


@dataclass
class OptimConfig:
    """AdamW with torch defaults, lr 5e-5, no schedule (official)."""

    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01
    lr_scheduler: str = "constant"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 0
    max_grad_norm: float | None = None  # None: no clipping (official)


@dataclass
class RunConfig:
    """Loop, precision, checkpointing and logging (shared by both stages)."""

    output_dir: str = "stablesr-train"
    seed: int = 23
    train_batch_size: int = 6  # per process
    gradient_accumulation_steps: int = 4
    max_steps: int = 800_000  # optimizer steps
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema_decay: float | None = None  # EMA of the trained parts; None: off
    checkpointing_steps: int = 1500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest"
    validation_steps: int = 1500
    validation_sampling_steps: int = 50  # DDPM steps for the validation images
    logging_steps: int = 50
    log_with: str | None = "tensorboard"  # None: no tracker
    export_official: bool = True  # also write the official .ckpt layout
    num_threads: int | None = None  # CPU threads for torch (None: torch's default)


@dataclass
class SFTTrainConfig(RunConfig):
    """Stage 1: the time-aware encoder and SFT layers on a frozen SD-2.x UNet."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class CFWDataConfig:
    """Stage-2 data: a folder made by ``make-cfw-data`` (``inputs/ gts/ latents/ samples/``)."""

    root: str = ""
    num_workers: int = 2


@dataclass
class CFWLossConfig:
    """L1 + LPIPS + hinge PatchGAN from ``disc_start`` with the constant weight 0.025 (OFFICIAL.md 6.4)."""

    perceptual_weight: float = 1.0
    disc_start: int = 501
    disc_weight: float = 0.025
    disc_factor: float = 1.0
    disc_layers: int = 3
    disc_channels: int = 64
    lpips_weights: str | None = None  # lpips linear-layer file (default: the lpips package's vgg.pth)
    vgg_weights: str | None = None  # torchvision-format VGG16 weights (vgg16-397923af.pth)
    allow_random_lpips: bool = False  # tests only: a randomly initialised VGG when no weights are available


@dataclass
class CFWTrainConfig(RunConfig):
    """Stage 2: only the CFW fusion layers (and the discriminator) train."""

    base: str = ""  # official CFW checkpoint, or a VAE to start from (an SD / StableSR .ckpt, a diffusers folder)
    cfw_config: str | None = None
    pipeline: str | None = None  # a stage-1 model folder: also write OUT/model decoding with the trained CFW
    fusion_w: float = 1.0
    data: CFWDataConfig = field(default_factory=CFWDataConfig)
    loss: CFWLossConfig = field(default_factory=CFWLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(betas=[0.5, 0.9], weight_decay=0.0))
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 8


@dataclass
class MakeCFWDataConfig:
    """CFW data generation (OFFICIAL.md 6.3): a stage-1 model on degraded pairs -> the stage-2 folder layout."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(queue_size=0, no_degradation_prob=0.0))
    output_dir: str = "cfw-data"
    num_images: int = 5000
    base_index: int = 0  # file-number offset (official --base_i)
    batch_size: int = 6
    ddpm_steps: int = 200
    seed: int = 10000
    mixed_precision: str = "no"


# --------------------------------------------------------------------------------------------- loading


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check/convert a YAML value for a field of type ``tp`` (int->float allowed, str->list not)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from a (nested) dict; unknown keys are errors naming the field."""
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping")
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def _set_path(cfg: Any, dotted: str, raw: Any) -> None:
    *parents, leaf = dotted.split(".")
    obj = cfg
    for p in parents:
        if not hasattr(obj, p) or not dataclasses.is_dataclass(getattr(obj, p)):
            raise ConfigError(f"unknown config section {p!r} in {dotted}")
        obj = getattr(obj, p)
    hints = _hints(type(obj))
    if leaf not in hints:
        raise ConfigError(f"unknown config field {dotted}")
    setattr(obj, leaf, _coerce(raw, hints[leaf], dotted))


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults, then the YAML file, then ``overrides`` (``{"data.gt_size": 256}``)."""
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config fields")
        try:
            cfg = from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    else:
        cfg = cls()
    for key, value in (overrides or {}).items():
        _set_path(cfg, key, value)
    check_ranges(cfg)
    return cfg


MIXED_PRECISIONS = ("no", "fp16", "bf16")
# field name -> (allowed?, what is allowed), applied wherever the field appears in a config
_RANGES: dict[str, tuple[Any, str]] = {
    "train_batch_size": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "max_steps": (lambda v: v >= 1, "at least 1"),
    "num_images": (lambda v: v >= 1, "at least 1"),
    "ddpm_steps": (lambda v: 1 <= v <= 1000, "in 1..1000"),
    "gt_size": (lambda v: v >= 32 and v % 4 == 0, "a multiple of 4, at least 32 (the LR crop is a quarter)"),
    "checkpointing_steps": (lambda v: v >= 0, "0 (off) or more"),
    "logging_steps": (lambda v: v >= 1, "at least 1"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "lr": (lambda v: v > 0, "positive"),
    "mixed_precision": (lambda v: v in MIXED_PRECISIONS, " or ".join(MIXED_PRECISIONS)),
}


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Refuse values that would crash deep inside a run or silently do nothing (batch size 0, one beta...)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        elif f.name in _RANGES and value is not None and not _RANGES[f.name][0](value):
            raise ConfigError(f"{prefix}{f.name} must be {_RANGES[f.name][1]}, got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------------------- flags


def _flag_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out += _flag_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp))
    return out


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config`` plus one flag per field (values parsed as YAML; absent flags leave the field alone)."""
    parser.add_argument("--config", metavar="YAML", help="config file (fields as in the dataclasses)")
    group = parser.add_argument_group("config fields (override the file)")
    defaults = cls()
    for dotted, tp in _flag_fields(cls):
        default = defaults
        for part in dotted.split("."):
            default = getattr(default, part)
        group.add_argument("--" + dotted.replace("_", "-"), dest=f"cfg:{dotted}", metavar="VALUE",
                           default=argparse.SUPPRESS, type=_yaml_value, help=f"default: {default!r}")


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    return load_config(cls, getattr(args, "config", None), overrides)
