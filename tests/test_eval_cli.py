"""`eval` / `compare` end to end on real image pairs: pairing, JSON shape, bad inputs, exit codes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stablesr.evaluation import EvalSettings, evaluate, psnr, ssim
from stablesr.evaluation._files import load_image
from stablesr.evaluation.cli import main
from stablesr.evaluation.matching import match_by_stem


@pytest.fixture()
def folders(data_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Three GT images and their bicubic x4 upscales (named with an `_x4` suffix)."""
    src = data_dir / "paired" / "imagenet_bicubic_x4"
    gt, pred, lr = tmp_path / "gt", tmp_path / "pred", tmp_path / "lr"
    for d in (gt, pred, lr):
        d.mkdir()
    for f in sorted((src / "gt").glob("*.png"))[:3]:
        shutil.copy(f, gt / f.name)
        shutil.copy(src / "lq" / f.name, lr / f.name)
        Image.open(src / "lq" / f.name).resize((256, 256), Image.BICUBIC).save(pred / f"{f.stem}_x4.png")
    return {"gt": gt, "pred": pred, "lr": lr, "tmp": tmp_path}


def test_eval_json_has_the_documented_shape_and_values(folders, capsys):
    out = folders["tmp"] / "scores.json"
    rc = main(["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--metrics",
               "psnr,psnr_y,ssim_y,niqe,lpips", "--crop-border", "4", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"metrics", "crop_border", "mean", "per_image", "unavailable"}
    assert data["crop_border"] == 4
    assert len(data["per_image"]) == 3
    stem = min(data["per_image"])
    pred = load_image(folders["pred"] / f"{stem}_x4.png").pixels
    gt = load_image(folders["gt"] / f"{stem}.png").pixels
    assert data["per_image"][stem]["psnr_y"] == pytest.approx(psnr(pred, gt, 4, True), abs=1e-9)
    assert data["per_image"][stem]["ssim_y"] == pytest.approx(ssim(pred, gt, 4, True), abs=1e-9)
    assert data["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in data["per_image"].values()]))
    assert 15 < data["mean"]["psnr_y"] < 40
    # LPIPS either ran (weights present) or is reported with its reason, never silently dropped.
    assert ("lpips" in data["metrics"]) != ("lpips" in data["unavailable"])
    if "lpips" in data["unavailable"]:
        assert "install" in data["unavailable"]["lpips"] or "fetch" in data["unavailable"]["lpips"]
    assert "'_x4' tolerated on 3" in capsys.readouterr().err


def test_compare_puts_methods_side_by_side(folders, tmp_path, capsys):
    lanczos = tmp_path / "lanczos"
    lanczos.mkdir()
    for f in folders["lr"].glob("*.png"):
        Image.open(f).resize((256, 256), Image.LANCZOS).save(lanczos / f.name)
    out = tmp_path / "cmp.json"
    rc = main(["compare", str(folders["pred"]), str(lanczos), "--gt", str(folders["gt"]), "--names", "bic,lan",
               "--metrics", "psnr_y", "--json", str(out), "--report", str(tmp_path / "cmp.md"), "--lr", str(folders["lr"])])
    assert rc == 0
    assert "| bic |" in (tmp_path / "cmp.md").read_text() and (tmp_path / "cmp_files" / "crops.png").is_file()
    data = json.loads(out.read_text())
    assert data["methods"] == ["bic", "lan"]
    assert data["results"]["bic"]["mean"]["psnr_y"] != data["results"]["lan"]["mean"]["psnr_y"]
    table = capsys.readouterr().out
    assert "bic" in table and "lan" in table and "psnr_y" in table


def test_identical_folders_score_perfectly(folders):
    r = evaluate(folders["gt"], folders["gt"], EvalSettings(metrics=("psnr", "ssim"), progress=False))
    assert all(math.isinf(v["psnr"]) and v["ssim"] == pytest.approx(1.0) for v in r.per_image.values())


def test_bad_files_are_reported_and_the_rest_still_scored(folders, capsys):
    pred = folders["pred"]
    victims = sorted(pred.glob("*.png"))
    victims[0].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # corrupt PNG
    Image.open(victims[1]).resize((128, 128)).save(victims[1])  # wrong size
    rc = main(["eval", "--pred", str(pred), "--gt", str(folders["gt"]), "--metrics", "psnr"])
    err = capsys.readouterr().err
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any(victims[0].name in e for e in errors)
    assert any(victims[1].name in e and "128x128" in e and "--resize-gt" in e for e in errors)
    assert "Traceback" not in err
    # --resize-gt accepts the wrong-size prediction.
    rc = main(["eval", "--pred", str(pred), "--gt", str(folders["gt"]), "--metrics", "psnr", "--resize-gt"])
    assert rc == 1 and capsys.readouterr().err.count("error: ") == 1  # only the corrupt file is left


@pytest.mark.parametrize("argv, expect", [
    (["eval", "--pred", "{tmp}/missing", "--gt", "{gt}"], "not a directory"),
    (["eval", "--pred", "{pred}", "--gt", "{tmp}/missing"], "not a directory"),
    (["eval", "--pred", "{pred}", "--gt", "{gt}", "--metrics", "psnr,bogus"], "unknown metric"),
    (["eval", "--pred", "{pred}", "--gt", "{gt}", "--report", "{tmp}/r.pdf"], ".html or .md"),
    (["eval", "--pred", "{lr}", "--gt", "{tmp}"], "no image files"),
    (["compare", "{pred}", "{pred}", "--gt", "{gt}"], "must differ"),
])
def test_usage_errors_are_one_line_with_exit_code_2(folders, capsys, argv, expect):
    args = [a.format(tmp=folders["tmp"], gt=folders["gt"], pred=folders["pred"], lr=folders["lr"]) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err


def test_stem_matching_tolerates_suffixes_and_reports_leftovers():
    preds = [Path(p) for p in ("p/a_out.png", "p/b.png", "p/b_x4.png", "p/c_x4_out.png", "p/e_out_x4.png",
                               "p/zzz.png")]
    gts = [Path(g) for g in ("g/a.png", "g/b.jpg", "g/c.png", "g/c.tif", "g/d.png", "g/e_out.png")]
    r = match_by_stem(preds, gts)
    assert [(s, p.name) for s, p, _ in r.pairs] == [("a", "a_out.png"), ("b", "b.png"), ("c", "c_x4_out.png"),
                                                    ("e_out", "e_out_x4.png")]
    assert r.suffixes == {"_out": 1, "_x4_out": 1, "_x4": 1}
    assert [p.name for p in r.missing_pred] == ["d.png"]
    assert [p.name for p in r.extra_pred] == ["zzz.png"]
    assert [p.name for p in r.duplicates] == ["b_x4.png"]
    assert [p.name for p in r.duplicate_gt] == ["c.tif"]


def test_no_reference_metrics_run_without_gt(folders):
    r = evaluate(folders["gt"], None, EvalSettings(metrics=("niqe", "psnr"), progress=False))
    assert r.metrics == ["niqe"] and "needs ground truth" in r.unavailable["psnr"]
    assert all(v["niqe"] > 0 for v in r.per_image.values())


def test_module_entry_point_runs(folders):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "stablesr.evaluation", "eval", "--pred", str(folders["gt"]),
                           "--gt", str(folders["gt"]), "--metrics", "psnr_y"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "psnr_y" in proc.stdout and "inf" in proc.stdout


def test_a_missing_prediction_is_a_failure_not_a_smaller_test_set(folders, capsys):
    victim = min(folders["pred"].glob("*.png"))
    victim.unlink()
    rc = main(["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--metrics", "psnr"])
    err = capsys.readouterr().err
    assert rc == 1
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: {folders['gt'] / victim.name.replace('_x4', '')}: no prediction for this GT image in {folders['pred']}"]


def test_every_metric_builds_or_says_why_not():
    from stablesr.evaluation.metrics import CATALOGUE, MetricUnavailable, build_metric

    for name in ("psnr", "psnr_y", "ssim", "ssim_y", "niqe"):
        build_metric(name, crop_border=2)  # no weights needed: must always work
    for name in set(CATALOGUE) - {"psnr", "psnr_y", "ssim", "ssim_y", "niqe"}:
        try:
            build_metric(name)
        except MetricUnavailable as exc:
            reason = str(exc)
            assert "\n" not in reason and ("install" in reason or "fetch" in reason), reason
