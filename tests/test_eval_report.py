"""The report renders: HTML opened in headless Chromium (system chromium + chromedriver), Markdown + PNGs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stablesr.evaluation import EvalSettings, evaluate
from stablesr.evaluation.report import write_report

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture()
def two_methods(data_dir: Path, tmp_path: Path):
    src = data_dir / "paired" / "imagenet_bicubic_x4"
    gt, lr = tmp_path / "gt", tmp_path / "lr"
    gt.mkdir()
    lr.mkdir()
    dirs = {"bicubic": tmp_path / "bicubic", "lanczos": tmp_path / "lanczos"}
    for d in dirs.values():
        d.mkdir()
    for f in sorted((src / "gt").glob("*.png"))[:4]:
        shutil.copy(f, gt / f.name)
        shutil.copy(src / "lq" / f.name, lr / f.name)
        for name, filt in (("bicubic", Image.BICUBIC), ("lanczos", Image.LANCZOS)):
            Image.open(src / "lq" / f.name).resize((256, 256), filt).save(dirs[name] / f"{f.stem}_out.png")
    settings = EvalSettings(metrics=("psnr_y", "ssim_y", "niqe", "lpips"), crop_border=4, progress=False)
    results = [evaluate(d, gt, settings, name=n) for n, d in dirs.items()]
    return results, lr, tmp_path


def test_markdown_report_writes_table_and_pngs(two_methods):
    results, lr, tmp = two_methods
    out = write_report(results, tmp / "report" / "eval.md", lr_dir=lr)
    text = out.read_text()
    assert "| method | psnr_y ↑ | ssim_y ↑ | niqe ↓ |" in text
    assert text.count("| bicubic |") == 1 and text.count("| lanczos |") == 1
    pngs = sorted((tmp / "report" / "eval_files").glob("*.png"))
    assert {p.stem for p in pngs} >= {"crops", "dist_psnr_y", "bars_niqe"}
    for p in pngs:
        assert f"eval_files/{p.name}" in text
        with Image.open(p) as im:
            assert im.width > 100 and im.height > 100
    assert "lpips" in text and "unavailable" in text or "lpips ↓" in text  # LPIPS shown, or its reason


def _driver():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"system Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); apt-get install chromium chromium-driver")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    pytest.importorskip("selenium", reason="selenium (dev extra) drives the system Chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1800", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(two_methods):
    results, lr, tmp = two_methods
    out = write_report(results, tmp / "eval.html", lr_dir=lr)
    assert "http://" not in out.read_text() and "https://" not in out.read_text()  # self-contained
    from selenium.webdriver.common.by import By

    driver = _driver()
    try:
        driver.get(out.resolve().as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#summary tbody tr")
        assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["bicubic", "lanczos"]
        heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#summary thead th")]
        assert heads[:4] == ["method", "psnr_y ↑", "ssim_y ↑", "niqe ↓"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#summary td.best")) >= 1
        images = driver.find_elements(By.CSS_SELECTOR, "img")
        assert len(images) >= 7  # crop grid + distribution and bar chart per metric
        for img in images:
            loaded = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            assert loaded and loaded > 100, img.get_attribute("alt")
        grid_w = driver.execute_script("return document.getElementById('crops').naturalWidth")
        assert grid_w == 192 * 4  # LR, bicubic, lanczos, GT
        shot = tmp / "eval_report.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as im:
            assert im.width >= 1000 and len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 20  # not blank
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
