"""End-to-end tests of ``stablesr ui``: the real server (a subprocess on 127.0.0.1, tiny golden model),
driven by headless Chromium through selenium, and called through gradio_client.

Nothing here reaches the network: Gradio analytics are off, the hub is offline, Chromium resolves
every host but 127.0.0.1 to nothing, and selenium is given the system chromedriver (so Selenium
Manager never downloads anything). A screenshot of the page after an upscale is saved under the
test's tmp dir (its path is printed; ``STABLESR_UI_SCREENSHOT=path`` saves a copy there too).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
START_TIMEOUT_S = 180  # gradio import + model load on a busy 2-core machine
RESULT_TIMEOUT_S = 240
MAX_PIXELS = 20_000  # the server's input limit in these tests: 96x48 passes, 200x200 does not

pytestmark = pytest.mark.slow


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    tmpdir: Path  # the server's TMPDIR: its private folder must be gone after it stops
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(root / "hf"), STABLESR_HOME=str(root / "stablesr"), OMP_NUM_THREADS="2",
               TMPDIR=str(root / "tmp"), NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    for key in ("GRADIO_SHARE", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_TEMP_DIR", "HF_HUB_CACHE"):
        env.pop(key, None)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def start_server(root: Path, flags: list[str]) -> Server:
    port = free_port()
    log = root / "server.log"
    env = server_env(root)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stablesr", "ui", "--host", "127.0.0.1", "--port",
                                 str(port), *flags], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}/", proc, root / "tmp", log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"the server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def tiny_model_flags(tiny_weights: dict[str, Path]) -> list[str]:
    for key in ("ldm", "cfw", "config", "prompt_embeds"):
        if not tiny_weights[key].is_file():
            pytest.skip(f"{tiny_weights[key]} not available")
    return ["--checkpoint", str(tiny_weights["ldm"]), "--cfw-checkpoint", str(tiny_weights["cfw"]),
            "--config", str(tiny_weights["config"]), "--prompt-embeds", str(tiny_weights["prompt_embeds"]),
            "--device", "cpu"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_flags: list[str]) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ui-server"), [*tiny_model_flags, "--max-pixels", str(MAX_PIXELS)])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Small copies of real photos (96x48 RGB, 48x32 RGBA), a 200x200 one over the limit, a corrupt file."""
    root = tmp_path_factory.mktemp("ui-images")
    real = data_dir / "real_lr"
    with Image.open(real / "00003.png") as im:
        im.convert("RGB").resize((96, 48), Image.Resampling.LANCZOS).save(root / "branch.png")
        im.convert("RGB").resize((200, 200), Image.Resampling.LANCZOS).save(root / "big.png")
    with Image.open(real / "children-alpha.png") as im:
        rgba = np.array(im.convert("RGBA").resize((48, 32), Image.Resampling.LANCZOS))
    rgba[:, :24, 3], rgba[:, 24:, 3] = 0, 255  # known transparency: left half clear, right half opaque
    Image.fromarray(rgba, "RGBA").save(root / "children.png")
    (root / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"rgb": root / "branch.png", "big": root / "big.png", "rgba": root / "children.png",
            "corrupt": root / "x.png"}


# --------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                    "chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_AVOID_STATS"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1100",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # to list every request the page makes
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def page_requests(driver: object) -> list[str]:
    """URLs the page requested since the last call (from Chromium's performance log)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def open_page(driver: object, url: str) -> object:
    """A fresh session of the page, ready when the Upscale button can be clicked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 120).until(ec.element_to_be_clickable((By.ID, "run-btn")))
    return WebDriverWait(driver, RESULT_TIMEOUT_S)


def upload(driver: object, wait: object, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, "#input-files input[type=file]")
    field.send_keys("\n".join(str(p) for p in paths))
    # The file list shows each name as stem and suffix on separate lines.
    wait.until(lambda d: all(p.stem in d.find_element(By.ID, "input-files").text for p in paths))


def set_number(driver: object, css: str, value: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, css)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def slider_images(driver: object) -> list[list[int]] | None:
    """Natural sizes of the slider's two images once both have loaded, else None."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll('#result img[data-testid=imageslider-image]')];"
        "if (imgs.length !== 2 || !imgs.every(i => i.complete && i.naturalWidth > 0)) return null;"
        "return imgs.map(i => [i.naturalWidth, i.naturalHeight]);")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def save_screenshot(driver: object, path: Path, *, keep: bool = True) -> None:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if keep and os.environ.get("STABLESR_UI_SCREENSHOT"):
        shutil.copyfile(path, os.environ["STABLESR_UI_SCREENSHOT"])


def test_browser_upscale_shows_slider_gallery_and_download(server: Server, browser: object, images: dict,
                                                           tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    wait = open_page(browser, server.url)
    upload(browser, wait, images["rgb"])
    set_number(browser, "#scale input[type=number]", 2)
    set_number(browser, "#steps input[type=number]", 2)
    browser.execute_script("document.querySelector('#color-fix input[value=wavelet]').click()")
    browser.find_element(By.ID, "run-btn").click()
    sizes = wait.until(slider_images)
    assert sizes == [[192, 96], [192, 96]]  # before (input resized) and after, both 2 x (96, 48)
    status = wait.until(lambda d: d.find_element(By.ID, "status").text)
    assert "Upscaled 1 image(s)" in status and "192x96" in status

    # The download is the full-resolution lossless PNG, served by the same server.
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads a[href]"))[0]
    href = link.get_attribute("href")
    assert href.startswith(server.url)
    out = tmp_path / "download.png"
    out.write_bytes(fetch(href))
    with Image.open(out) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (192, 96), "RGB")
    assert wait.until(lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#gallery img')];"
        "return imgs.length === 1 && imgs[0].complete && imgs[0].naturalWidth === 192;"))
    assert "Traceback" not in browser.page_source
    urls = page_requests(browser)
    assert any(u.startswith(server.url + "gradio_api/file=") for u in urls)  # the log does see the page's requests
    assert [u for u in urls if not u.startswith((server.url, "data:", "blob:"))] == []  # no CDN, fonts, analytics
    time.sleep(0.5)  # let the slider's fade-in finish, for the picture only
    save_screenshot(browser, tmp_path / "ui.png")


def test_browser_corrupt_upload_shows_message(server: Server, browser: object, images: dict,
                                              tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    wait = open_page(browser, server.url)
    upload(browser, wait, images["corrupt"])
    browser.find_element(By.ID, "run-btn").click()
    toast = "[data-testid=toast-body].error [data-testid=toast-text]"
    text = wait.until(lambda d: " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, toast)))
    assert "x.png: not a recognised image file" in text
    assert str(server.tmpdir) not in text and "Traceback" not in browser.page_source
    assert slider_images(browser) is None
    save_screenshot(browser, tmp_path / "ui-error.png", keep=False)


def test_browser_batch_fills_the_gallery_and_reports_the_bad_file(server: Server, browser: object, images: dict
                                                                  ) -> None:
    from selenium.webdriver.common.by import By

    wait = open_page(browser, server.url)
    upload(browser, wait, images["rgb"], images["corrupt"], images["rgba"])
    set_number(browser, "#scale input[type=number]", 2)
    set_number(browser, "#steps input[type=number]", 1)
    browser.find_element(By.ID, "run-btn").click()
    status = wait.until(lambda d: d.find_element(By.ID, "status").text)
    assert "Upscaled 2 image(s)" in status and "failed: x.png: not a recognised image file" in status
    assert wait.until(slider_images) == [[192, 96], [192, 96]]  # the first result
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#gallery button img, #gallery img")
    assert len({t.get_attribute("src") for t in thumbs}) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#downloads a[href]")) == 2
    browser.execute_script("arguments[0].click()", thumbs[-1])  # compare the second result instead
    wait.until(lambda d: slider_images(d) == [[96, 64], [96, 64]])


# --------------------------------------------------------------------------------------------- API


@pytest.fixture(scope="module")
def client(server: Server, tmp_path_factory: pytest.TempPathFactory) -> object:
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


def test_api_endpoint_parameters_are_named_like_the_cli(client: object) -> None:
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/upscale"]
    params = {p["parameter_name"]: p for p in info["parameters"]}
    assert list(params)[:7] == ["image", "scale", "steps", "fidelity", "color_fix", "sampler", "seed"]
    assert {"tile", "tile_overlap", "guidance_scale", "prompt", "negative_prompt"} <= set(params)
    assert params["scale"]["parameter_default"] == 4.0 and params["seed"]["parameter_default"] == 42
    assert params["steps"]["parameter_default"] is None and params["sampler"]["parameter_default"] == "ddpm"


def test_api_upscale_keeps_alpha(client: object, images: dict) -> None:
    from gradio_client import handle_file

    path = client.predict(image=handle_file(str(images["rgba"])), scale=2, steps=1, color_fix="wavelet",
                          api_name="/upscale")
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (96, 64), "RGBA")
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32)
    assert alpha[:, :40].max() <= 8 and alpha[:, 56:].min() >= 247  # the transparent half stays transparent


def test_api_same_seed_same_result_other_seed_differs(client: object, images: dict) -> None:
    from gradio_client import handle_file

    def run(seed: int) -> np.ndarray:
        path = client.predict(image=handle_file(str(images["rgb"])), scale=2, steps=1, seed=seed,
                              api_name="/upscale")
        with Image.open(path) as im:
            return np.asarray(im, dtype=np.int16)

    first, again, other = run(1), run(1), run(2)
    assert np.abs(first - again).max() <= 1  # tolerance: one 8-bit level
    assert np.abs(first - other).mean() > 0.5


def test_api_errors_are_one_line_messages(client: object, images: dict) -> None:
    from gradio_client import handle_file

    with pytest.raises(Exception, match=r"big\.png: image is 200x200 \(40,000 pixels\), above the limit"):
        client.predict(image=handle_file(str(images["big"])), steps=2, api_name="/upscale")
    with pytest.raises(Exception, match=r"x\.png: not a recognised image file"):
        client.predict(image=handle_file(str(images["corrupt"])), steps=2, api_name="/upscale")
    with pytest.raises(Exception, match=r"tile overlap must be in \[0, tile size 16\), got 16"):
        client.predict(image=handle_file(str(images["rgb"])), steps=2, tile=16, tile_overlap=16, api_name="/upscale")
    with pytest.raises(Exception, match=r"^tile size must be at least 16 latent px"):  # the field is named
        client.predict(image=handle_file(str(images["rgb"])), steps=2, tile=8, api_name="/upscale")
    with pytest.raises(Exception, match=r"^seed must be in \[-2\*\*63, 2\*\*64\)"):  # not blamed on the image
        client.predict(image=handle_file(str(images["rgb"])), steps=2, seed=10**23, api_name="/upscale")


def test_api_requests_queue_and_report_steps(client: object, images: dict) -> None:
    """With --concurrency 1 a second request waits in the queue; a running one reports each sampling step."""
    from gradio_client import handle_file
    from gradio_client.utils import Status

    first = client.submit(image=handle_file(str(images["rgb"])), scale=2, steps=12, api_name="/upscale")
    seen: dict[str, list] = {"first": [], "second": []}

    def poll(key: str, job: object) -> object:
        status = job.status()
        seen[key].append((status.code, [p.desc for p in status.progress_data or []]))
        return status

    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while poll("first", first).code not in (Status.PROCESSING, Status.PROGRESS, Status.FINISHED):
        assert time.monotonic() < deadline, seen["first"]
        time.sleep(0.02)
    second = client.submit(image=handle_file(str(images["rgba"])), scale=2, steps=1, api_name="/upscale")
    while not (first.done() and second.done()) and time.monotonic() < deadline:
        poll("first", first)
        poll("second", second)
        time.sleep(0.02)
    assert Path(first.result(timeout=60)).is_file() and Path(second.result(timeout=60)).is_file()
    steps = {desc for code, descs in seen["first"] if code == Status.PROGRESS for desc in descs}
    assert any(desc and "step" in desc for desc in steps), seen["first"]
    assert Status.IN_QUEUE in {code for code, _ in seen["second"]}, seen["second"]


def test_reloading_the_page_cancels_its_upscale_and_frees_the_queue(server: Server, browser: object, client: object,
                                                                     images: dict) -> None:
    """A reloaded page's 1000-step run (about 90 s here) is cancelled, so the next request in the queue (one step,
    a few seconds) does not wait for it."""
    from gradio_client import handle_file
    from selenium.webdriver.common.by import By

    wait = open_page(browser, server.url)
    upload(browser, wait, images["rgb"])
    set_number(browser, "#steps input[type=number]", 1000)
    browser.find_element(By.ID, "run-btn").click()
    time.sleep(8)  # loading the image and the first steps (about 4 s of fixed work, then 0.09 s a step)
    browser.refresh()
    started = time.monotonic()
    result = client.submit(image=handle_file(str(images["rgba"])), scale=2, steps=1, api_name="/upscale")
    assert Path(result.result(timeout=RESULT_TIMEOUT_S)).is_file()
    assert time.monotonic() - started < 40, "the reloaded page's run was not cancelled"
    assert "Traceback" not in server.log.read_text()


def test_stop_during_an_upscale_is_clean_and_removes_private_temp_folder(server: Server, client: object,
                                                                         images: dict) -> None:
    """Last in this module: SIGTERM while an upscale runs ends it at its next step and the server exits 0 (it
    used to exit while the worker thread was inside torch: "terminate called", exit 134); the folder is gone."""
    from gradio_client import handle_file
    from gradio_client.utils import Status

    assert [p.name for p in server.tmpdir.iterdir() if p.name.startswith("stablesr-ui-")]
    job = client.submit(image=handle_file(str(images["rgb"])), scale=2, steps=1000, api_name="/upscale")
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while job.status().code != Status.PROGRESS:  # inside the sampling loop
        assert time.monotonic() < deadline and not job.done(), job.status()
        time.sleep(0.05)
    started = time.monotonic()
    assert server.stop() == 0, server.log.read_text()
    assert time.monotonic() - started < 30  # not the remaining ~1000 steps
    assert not [p.name for p in server.tmpdir.iterdir() if p.name.startswith("stablesr-ui-")]
    log = server.log.read_text()
    assert "serving on http://127.0.0.1:" in log and "stopping" in log
    assert "Traceback" not in log and "terminate called" not in log


# --------------------------------------------------------------------------------------------- model errors


def test_missing_weights_are_explained_in_the_page(tmp_path: Path) -> None:
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    srv = start_server(tmp_path, ["--model", "turbo", "--offline", "--device", "cpu"])
    try:
        config = fetch(srv.url + "config").decode()
        assert "The model could not be loaded" in config and "stablesr download turbo" in config
        image = tmp_path / "a.png"
        Image.new("RGB", (32, 32), (90, 120, 30)).save(image)
        client = Client(srv.url, verbose=False, download_files=str(tmp_path / "dl"))
        with pytest.raises(Exception, match="The model is not loaded"):
            client.predict(image=handle_file(str(image)), api_name="/upscale")
    finally:
        assert srv.stop() == 0
