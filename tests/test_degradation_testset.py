"""``make-testset`` end to end on real photos: layout, sizes, meta, determinism, resume, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stablesr.cli import main


@pytest.fixture()
def hr_dir(tmp_path: Path, data_dir: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    shutil.copy(data_dir / "hr" / "set5" / "bird.png", folder / "bird.png")  # 288x288
    shutil.copy(data_dir / "hr" / "bsd68" / "101087.png", folder / "101087.png")  # 481x321
    return folder


def _run(hr: Path, out: Path, *extra: str) -> int:
    return main(["make-testset", str(hr), str(out), "--crop-size", "128", "--device", "cpu", "--quiet", *extra])


def _digest(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_layout_sizes_and_meta(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(hr_dir, out, "--crops-per-image", "2", "--seed", "3") == 0
    assert "done 4, skipped 0, failed 0 in" in capsys.readouterr().out
    names = sorted(p.name for p in (out / "gt").iterdir())
    assert names == ["101087_0.png", "101087_1.png", "bird_0.png", "bird_1.png"]
    assert names == sorted(p.name for p in (out / "lr").iterdir())
    for name in names:
        gt, lr = Image.open(out / "gt" / name), Image.open(out / "lr" / name)
        assert gt.size == (128, 128) and lr.size == (32, 32) and gt.mode == lr.mode == "RGB"
    # the GT is an unsharpened crop of the photo: its pixels are the photo's pixels
    src = np.asarray(Image.open(hr_dir / "bird.png").convert("RGB"))
    crop = np.asarray(Image.open(out / "gt" / "bird_0.png"))
    meta = [json.loads(line) for line in (out / "meta.jsonl").read_text().splitlines()]
    entry = next(m for m in meta if m["name"] == "bird_0")
    view = src[:, ::-1] if entry["crop"]["flip"] else src
    top, left = int(entry["crop"]["top"] * (288 - 127)), int(entry["crop"]["left"] * (288 - 127))
    np.testing.assert_array_equal(view[top : top + 128, left : left + 128], crop)  # meta says where it came from
    assert [m["name"] for m in meta] == [n[:-4] for n in names]
    assert entry["preset"] == "realesrgan" and entry["usm"] is False and "kernel1" in entry["params"]


def test_deterministic_and_batch_size_independent(hr_dir: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _run(hr_dir, a, "--crops-per-image", "2", "--batch-size", "1") == 0
    assert _run(hr_dir, b, "--crops-per-image", "2", "--batch-size", "3") == 0
    assert _digest(a) == _digest(b)
    assert (a / "meta.jsonl").read_bytes() == (b / "meta.jsonl").read_bytes()
    assert _run(hr_dir, c, "--crops-per-image", "2", "--seed", "1") == 0
    assert _digest(c) != _digest(a)


def test_skip_existing_resume(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(hr_dir, out) == 0
    first = _digest(out)
    (out / "lr" / "bird_0.png").unlink()
    capsys.readouterr()
    assert _run(hr_dir, out, "--skip-existing") == 0
    assert "done 1, skipped 1, failed 0" in capsys.readouterr().out
    assert _digest(out) == first
    assert len((out / "meta.jsonl").read_text().splitlines()) == 2


def test_bad_files_are_reported_and_the_run_continues(
    hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (hr_dir / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert _run(hr_dir, out, "--usm", "--degradation", "face") == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "Traceback" not in captured.err
    assert "done 2, skipped 0, failed 1" in captured.out
    assert sorted(p.name for p in (out / "lr").iterdir()) == ["101087_0.png", "bird_0.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop-size", "130"], "multiple of --scale"),
        (["--device", "cuda:7"], "--device"),
        (["--crops-per-image", "0"], "at least 1"),
    ],
)
def test_usage_errors(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                      message: str) -> None:
    if args[:2] == ["--device", "cuda:7"]:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    code = main(["make-testset", str(hr_dir), str(tmp_path / "out"), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_input_folder_and_scale(tmp_path: Path, hr_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-testset", str(tmp_path / "nope"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    nested = tmp_path / "nest"
    (nested / "gt").mkdir(parents=True)
    assert main(["make-testset", str(nested / "gt"), str(nested), "--quiet"]) == 2  # would write into HR_DIR
    assert "must differ from HR_DIR" in capsys.readouterr().err
    out = tmp_path / "x2"
    assert _run(hr_dir, out, "--scale", "2", "--degradation", "bicubic") == 0
    assert Image.open(out / "lr" / "bird_0.png").size == (64, 64)
