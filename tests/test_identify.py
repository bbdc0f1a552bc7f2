"""Recognising official release files by content (size, then a cached sha256), and state dicts by keys and shapes.

The published sizes are gigabytes, so the tests register small synthetic files in a copy of the
preset table (test data; the matching, hashing and caching under test are the real code).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MANIFESTS, require

from stablesr.checkpoints import identify
from stablesr.checkpoints.identify import (
    PRESETS,
    HubFile,
    StateDictInfo,
    classify_state_dict,
    hash_cache_file,
    identify_file,
    unknown_file_warning,
)
from stablesr.checkpoints.loading import load_state_dict
from stablesr.errors import CheckpointError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STABLESR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the real hashing function reads (counted, not replaced)."""
    calls: list[Path] = []
    real: Callable[[Path], str] = identify._sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(identify, "_sha256", counting)
    return calls


def _blob(path: Path, seed: int, size: int = 50_000) -> Path:
    path.write_bytes(hashlib.shake_256(str(seed).encode()).digest(size))
    return path


def _published(path: Path, name: str) -> HubFile:
    return HubFile(name, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)


def _table_with(ckpt_768v: HubFile | None = None, cfw: HubFile | None = None) -> dict:
    table = dict(PRESETS)
    for name, preset in PRESETS.items():
        if name == "stablesr-768v" and ckpt_768v:
            preset = dataclasses.replace(preset, ckpt=ckpt_768v)
        if cfw and preset.cfw_ckpt.name == "vqgan_cfw_00011.ckpt":
            preset = dataclasses.replace(preset, cfw_ckpt=cfw)
        table[name] = preset
    return table


def test_registered_file_is_identified_under_any_name(tmp_path: Path, home: Path, hash_calls: list) -> None:
    original = _blob(tmp_path / "stablesr_768v_000139.ckpt", seed=1)
    table = _table_with(ckpt_768v=_published(original, "stablesr_768v_000139.ckpt"))
    for name in ("stablesr_768v_000139.ckpt", "my model.bin", "stablesr_000117.ckpt"):  # the last name lies
        copy = original if name == original.name else Path(shutil.copy(original, tmp_path / name))
        ident = identify_file(copy, presets=table)
        assert ident is not None and (ident.preset, ident.role) == ("stablesr-768v", "diffusion")
        assert ident.presets == ("stablesr-768v",) and ident.file.name == "stablesr_768v_000139.ckpt"


def test_shared_cfw_file_names_every_preset_using_it(tmp_path: Path, home: Path) -> None:
    cfw = _blob(tmp_path / "decoder.pth", seed=2)
    ident = identify_file(cfw, presets=_table_with(cfw=_published(cfw, "vqgan_cfw_00011.ckpt")))
    assert ident is not None and ident.role == "cfw"
    assert set(ident.presets) == {"turbo", "stablesr-512", "stablesr-768v"}


def test_hash_is_cached_and_invalidated_by_mtime(tmp_path: Path, home: Path, hash_calls: list) -> None:
    path = _blob(tmp_path / "a.ckpt", seed=3)
    table = _table_with(ckpt_768v=_published(path, "stablesr_768v_000139.ckpt"))
    assert identify_file(path, presets=table) is not None and len(hash_calls) == 1
    entry = json.loads(hash_cache_file().read_text())["files"][str(path.resolve())]
    assert hash_cache_file().parent == home
    assert entry == {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,
                     "sha256": table["stablesr-768v"].ckpt.sha256}

    told: list[Path] = []
    assert identify_file(path, presets=table, on_hash=told.append) is not None and len(hash_calls) == 1  # cached
    assert told == []
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert identify_file(path, presets=table, on_hash=told.append) is not None and len(hash_calls) == 2  # touched
    assert told == [path.resolve()]
    assert identify_file(path, presets=table, use_cache=False) is not None and len(hash_calls) == 3

    moved = path.rename(tmp_path / "b.ckpt")  # a new path is a new entry; the gone one is forgotten
    assert identify_file(moved, presets=table) is not None and len(hash_calls) == 4
    assert list(json.loads(hash_cache_file().read_text())["files"]) == [str(moved.resolve())]


def test_changed_content_with_same_size_is_not_trusted_from_the_cache(tmp_path: Path, home: Path) -> None:
    path = _blob(tmp_path / "a.ckpt", seed=4)
    table = _table_with(ckpt_768v=_published(path, "stablesr_768v_000139.ckpt"))
    assert identify_file(path, presets=table) is not None
    _blob(path, seed=5)  # same size, new content, new mtime
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert identify_file(path, presets=table) is None


def test_unregistered_files_are_none_and_other_sizes_are_never_read(tmp_path: Path, home: Path,
                                                                    hash_calls: list) -> None:
    registered = _blob(tmp_path / "reg.ckpt", seed=6)
    table = _table_with(ckpt_768v=_published(registered, "stablesr_768v_000139.ckpt"))
    assert identify_file(_blob(tmp_path / "other_size.ckpt", seed=7, size=1234), presets=table) is None
    assert identify_file(_blob(tmp_path / "other.ckpt", seed=8), presets=table) is None  # same size, other bytes
    assert [p.name for p in hash_calls] == ["other.ckpt"]
    assert identify_file(registered) is None  # the real table: no release file is 50 kB
    assert len(hash_calls) == 1


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.ckpt: cannot read"):
        identify_file(tmp_path / "nope.ckpt")


def test_damaged_cache_is_rebuilt(tmp_path: Path, home: Path, hash_calls: list) -> None:
    path = _blob(tmp_path / "a.ckpt", seed=9)
    table = _table_with(ckpt_768v=_published(path, "stablesr_768v_000139.ckpt"))
    home.mkdir(parents=True)
    hash_cache_file().write_text("{not json")
    assert identify_file(path, presets=table) is not None
    assert str(path.resolve()) in json.loads(hash_cache_file().read_text())["files"]


# ---------------------------------------------------------------------------------------------
# Classification by keys and shapes


def test_tiny_golden_checkpoints_are_classified(tiny_weights: dict[str, Path]) -> None:
    ldm = classify_state_dict(load_state_dict(tiny_weights["ldm"]))
    assert (ldm.kind, ldm.model_channels, ldm.in_channels, ldm.context_dim) == ("diffusion", 32, 4, 32)
    assert ldm.sft_layers > 0 and ldm.encoder_channels == 32 and ldm.has_vae and ldm.text_width is None
    cfw = classify_state_dict(load_state_dict(tiny_weights["cfw"]))
    assert (cfw.kind, cfw.cfw_fusion_layers, cfw.has_training_loss) == ("cfw", 2, False)


def test_sft_only_extract_is_classified(tiny_weights: dict[str, Path]) -> None:
    full = load_state_dict(tiny_weights["ldm"])
    extract = {k: v for k, v in full.items() if ".spade." in k or k.startswith("structcond_stage_model.")}
    info = classify_state_dict(extract)
    assert info.kind == "sft_extract" and info.sft_layers == classify_state_dict(full).sft_layers
    assert "base UNet" in info.describe()


def test_full_size_layouts_are_classified() -> None:
    def shapes(name: str) -> dict:
        path = require(MANIFESTS / f"{name}.json")
        return {k: v["shape"] for k, v in json.loads(path.read_text())["keys"].items()}

    for name in ("stablesr_text_T_512", "stablesr_text_T_768v"):
        info = classify_state_dict(shapes(name))
        assert (info.kind, info.family, info.model_channels, info.context_dim) == ("diffusion", "SD 2.x", 320, 1024)
        assert info.linear_proj and info.text_width == 1024 and info.sft_layers == 22
    cfw = shapes("cfw_autoencoder_kl_64x64x4_resi")
    assert classify_state_dict(cfw).kind == "cfw"
    with_loss = {**cfw, "loss.discriminator.main.0.weight": [64, 3, 4, 4]}
    assert classify_state_dict(with_loss).has_training_loss


def test_other_state_dicts_are_unknown() -> None:
    assert classify_state_dict({"conv.weight": (8, 3, 3, 3), "fc.bias": (10,)}).kind == "unknown"
    vae_only = {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)}
    assert classify_state_dict(vae_only).kind == "unknown"  # a plain VAE has no CFW fusion layers


def test_unknown_file_warning_is_one_actionable_line(tiny_weights: dict[str, Path]) -> None:
    info = classify_state_dict(load_state_dict(tiny_weights["ldm"]))
    line = unknown_file_warning("/models/custom.ckpt", info, prediction_type="eps", sample_size=512)
    assert "\n" not in line and line.startswith("/models/custom.ckpt: ")
    assert "'eps' at 512 px" in line and "--prediction-type v --sample-size 768" in line
    assert "32 channels" in line and "diffusion checkpoint" in line
    other = unknown_file_warning("x.ckpt", StateDictInfo("diffusion", 320, 4, 1024), prediction_type="v",
                                 sample_size=768)
    assert "--prediction-type eps --sample-size 512" in other and "SD 2.x" in other
