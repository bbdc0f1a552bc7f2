"""Tests for stablesr.presets and stablesr.hub: preset data, cache lookup, offline errors, the licence notice and
load_model (no network)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import huggingface_hub
import pytest
from conftest import official_checkpoints

from stablesr import hub, presets
from stablesr.errors import MissingWeightsError, OptionsError, StableSRError
from stablesr.hub import ModelSpec, load_model
from stablesr.presets import detect_variant

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach the network or write to the real home: an empty state folder, downloads refused."""
    monkeypatch.setenv("STABLESR_HOME", str(tmp_path / "stablesr-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*args: object, **kwargs: object) -> str:
        raise AssertionError("hf_hub_download must not be called in these tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)


def fake_cache(root: Path, files: dict[str, bytes], *, blob_names: dict[str, str] | None = None) -> Path:
    """Lay out ``root`` as the Hugging Face hub cache does after downloading ``files`` from Iceclear/StableSR.

    ``models--Iceclear--StableSR/refs/main`` holds the commit; ``snapshots/<commit>/<file>`` links to
    ``blobs/<etag>`` (for LFS files the etag is the content's sha256).
    """
    repo = root / "models--Iceclear--StableSR"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / (blob_names or {}).get(name, f"blob-{name}")
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    return root


# --------------------------------------------------------------------------------------------- presets


def test_presets_are_well_formed() -> None:
    assert presets.DEFAULT_PRESET in presets.PRESETS
    for key, preset in presets.PRESETS.items():
        assert key == preset.name
        assert preset.repo_id == "Iceclear/StableSR"
        assert "non-commercial" in preset.licence and "S-Lab" in preset.licence
        assert preset.prediction_type in ("eps", "v")
        assert preset.color_fix in ("adain", "wavelet", "none")
        assert 0.0 <= preset.fidelity <= 1.0 and preset.steps >= 1 and preset.image_size in (512, 768)
        assert len(set(preset.filenames)) == 2
        for hub_file in preset.files:
            assert hub_file.name.endswith(".ckpt")
            assert hub_file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", hub_file.sha256)
            assert hub_file.size_bytes is None or hub_file.size_bytes > 100_000_000
        assert preset.size_bytes is None or preset.size_bytes > 1_000_000_000


def test_preset_settings_match_the_official_readme() -> None:
    turbo = presets.PRESETS["turbo"]
    assert turbo.filenames == ("stablesr_turbo.ckpt", "vqgan_cfw_00011.ckpt")
    assert (turbo.steps, turbo.fidelity, turbo.color_fix, turbo.prediction_type) == (4, 0.5, "wavelet", "eps")
    v768 = presets.PRESETS["stablesr-768v"]
    assert (v768.ckpt.name, v768.image_size, v768.prediction_type) == ("stablesr_768v_000139.ckpt", 768, "v")
    face = presets.PRESETS["face"]
    assert face.filenames == ("face_stablesr_000050.ckpt", "face_vqgan_cfw_00011.ckpt")
    assert (face.fidelity, face.color_fix, face.prediction_type) == (0.0, "none", "v")
    assert presets.PRESETS["stablesr-512"].ckpt.name == "stablesr_000117.ckpt"


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_presets_and_file_name_detection_follow_official_md(name: str) -> None:
    """Each preset's files, prediction type and size match OFFICIAL.md 1.1 (read from the document), and so does
    file-name detection of its checkpoint, also when the file is renamed around the official stem."""
    official = official_checkpoints()
    preset = presets.PRESETS[name]
    row = official[preset.ckpt.name]
    assert (preset.prediction_type, preset.image_size) == (row["prediction"], row["image_size"])
    assert preset.cfw_ckpt.name in official and official[preset.cfw_ckpt.name]["prediction"] is None  # a decoder
    for file_name in (preset.ckpt.name, f"/models/My-{preset.ckpt.name.upper()}"):
        variant = detect_variant(file_name)
        assert (variant["parameterization"], variant["sample_size"]) == (row["prediction"], row["image_size"])


def test_official_md_prediction_types_are_the_ones_we_ship() -> None:
    """Guards the reader above: the face model is v (its config says so), 512 and Turbo are eps."""
    predictions = {name: row["prediction"] for name, row in official_checkpoints().items() if row["prediction"]}
    assert predictions == {"stablesr_000117.ckpt": "eps", "stablesr_768v_000139.ckpt": "v",
                           "stablesr_turbo.ckpt": "eps", "face_stablesr_000050.ckpt": "v"}
    assert presets.PRESETS["face"].prediction_type == "v"


def test_resolve_preset_is_forgiving_about_spelling_and_lists_choices() -> None:
    assert presets.resolve_preset("TURBO").name == "turbo"
    assert presets.resolve_preset("stablesr_768v").name == "stablesr-768v"
    with pytest.raises(StableSRError) as info:
        presets.resolve_preset("sd-turbo")
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in presets.PRESETS)


def test_download_command_names_both_tools() -> None:
    command = hub.download_command(presets.PRESETS["turbo"])
    assert "stablesr download turbo" in command
    assert "hf download Iceclear/StableSR stablesr_turbo.ckpt vqgan_cfw_00011.ckpt" in command


# --------------------------------------------------------------------------------------------- cache and offline


def test_offline_without_cache_raises_one_line_with_the_fix(tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    with pytest.raises(MissingWeightsError) as info:
        hub.download(presets.PRESETS["turbo"], offline=True, cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    for expected in ("stablesr_turbo.ckpt", "vqgan_cfw_00011.ckpt", "stablesr download turbo",
                     "hf download Iceclear/StableSR stablesr_turbo.ckpt vqgan_cfw_00011.ckpt", str(cache),
                     "--checkpoint"):
        assert expected in message


def test_hf_hub_offline_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="offline"):  # and no download attempt (see the fixture)
        hub.download(presets.PRESETS["face"], offline=False, cache_dir=tmp_path)


def test_cached_files_and_offline_download_use_the_cache(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path / "hub", {"stablesr_turbo.ckpt": b"diffusion", "vqgan_cfw_00011.ckpt": b"cfw"})
    preset = presets.PRESETS["turbo"]
    found = hub.cached_files(preset, cache_dir=cache)
    assert set(found) == {"stablesr_turbo.ckpt", "vqgan_cfw_00011.ckpt"}
    assert all(p is not None and p.read_bytes() for p in found.values())
    cfw = found["vqgan_cfw_00011.ckpt"]
    assert cfw is not None and cfw.read_bytes() == b"cfw"
    assert REVISION in str(found["stablesr_turbo.ckpt"])
    for offline in (True, False):  # online too: cached files never trigger a download
        paths = hub.download(preset, offline=offline, cache_dir=cache, stream=io.StringIO())
        assert paths == found
    # Another preset sharing the CFW file still misses its own diffusion checkpoint, and says only that.
    with pytest.raises(MissingWeightsError) as info:
        hub.download(presets.PRESETS["stablesr-512"], offline=True, cache_dir=cache)
    assert "stablesr_000117.ckpt" in str(info.value) and "vqgan_cfw_00011.ckpt" not in str(info.value)


def test_files_subset_and_recorded_absence(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path / "hub", {"stablesr_turbo.ckpt": b"diffusion"})
    no_exist = cache / "models--Iceclear--StableSR" / ".no_exist" / REVISION
    no_exist.mkdir(parents=True)
    (no_exist / "vqgan_cfw_00011.ckpt").write_bytes(b"")  # the hub said "no such file" once
    preset = presets.PRESETS["turbo"]
    assert hub.cached_files(preset, cache_dir=cache)["vqgan_cfw_00011.ckpt"] is None
    only = hub.download(preset, offline=True, files=("stablesr_turbo.ckpt",), cache_dir=cache,
                             stream=io.StringIO())
    assert list(only) == ["stablesr_turbo.ckpt"]


def test_cached_blob_with_another_sha256_gives_a_warning(tmp_path: Path) -> None:
    preset = presets.PRESETS["turbo"]
    good = fake_cache(tmp_path / "good", {"stablesr_turbo.ckpt": b"a", "vqgan_cfw_00011.ckpt": b"b"},
                      blob_names={n.name: n.sha256 or "x" for n in preset.files})
    stream = io.StringIO()
    hub.download(preset, offline=True, cache_dir=good, stream=stream, announce=True)
    assert "warning" not in stream.getvalue()
    bad = fake_cache(tmp_path / "bad", {"stablesr_turbo.ckpt": b"a", "vqgan_cfw_00011.ckpt": b"b"},
                     blob_names={"stablesr_turbo.ckpt": "f" * 64})
    stream = io.StringIO()
    hub.download(preset, offline=True, cache_dir=bad, stream=stream, announce=True)
    warnings = [line for line in stream.getvalue().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "stablesr_turbo.ckpt" in warnings[0]


# --------------------------------------------------------------------------------------------- licence


def test_licence_notice_is_printed_once(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path / "hub", {"stablesr_turbo.ckpt": b"a", "vqgan_cfw_00011.ckpt": b"b"})
    preset = presets.PRESETS["turbo"]
    quiet = io.StringIO()
    hub.download(preset, offline=True, cache_dir=cache, stream=quiet, announce=False)
    assert quiet.getvalue() == ""
    first, second = io.StringIO(), io.StringIO()
    hub.download(preset, offline=True, cache_dir=cache, stream=first)
    hub.download(preset, offline=True, cache_dir=cache, stream=second)
    assert "S-Lab License 1.0" in first.getvalue() and "non-commercial" in first.getvalue()
    assert second.getvalue() == ""
    assert (hub.stablesr_home() / "licence-notice-shown").is_file()


def test_stablesr_home_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLESR_HOME", str(tmp_path / "custom"))
    assert hub.stablesr_home() == tmp_path / "custom"
    monkeypatch.delenv("STABLESR_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.stablesr_home() == tmp_path / "xdg" / "stablesr"


def test_unwritable_home_shows_the_notice_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STABLESR_HOME", str(blocker / "sub"))  # mkdir fails: a file is in the way
    preset = presets.PRESETS["turbo"]
    assert hub.licence_notice(preset, stream=io.StringIO())
    assert hub.licence_notice(preset, stream=io.StringIO())


# --------------------------------------------------------------------------------------------- loading


def test_load_model_applies_the_preset_defaults_once(tiny_weights: dict[str, Path]) -> None:
    spec = ModelSpec(preset="turbo", checkpoint=tiny_weights["ldm"], cfw_checkpoint=tiny_weights["cfw"],
                     config=tiny_weights["config"], prompt_embeds=tiny_weights["prompt_embeds"])
    pipe = load_model(spec)
    cfg = pipe.config
    assert (cfg.default_steps, cfg.default_fidelity, cfg.default_color_fix, cfg.name) == (4, 0.5, "wavelet", "turbo")
    plain = load_model(ModelSpec(checkpoint=tiny_weights["ldm"], cfw_checkpoint=tiny_weights["cfw"],
                                 config=tiny_weights["config"], prompt_embeds=tiny_weights["prompt_embeds"]))
    assert (plain.config.default_steps, plain.config.name) == (200, "tiny_ldm")  # the file's own settings
    assert plain.config.sample_size == cfg.sample_size  # the config file decides the architecture, not the preset


def test_load_model_refuses_extra_files_for_a_folder(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="converted folder"):
        load_model(ModelSpec(checkpoint=tmp_path, cfw_checkpoint=tmp_path / "cfw.ckpt"))


def test_load_model_offline_fails_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match="stablesr download face"):
        load_model(ModelSpec(preset="face", offline=True))
