"""A real browser: JupyterLab on localhost, notebook 1 run in headless Chromium, its chart rendered."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
TOKEN = "otalab-browser-test"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="needs Debian's chromium and chromium-driver (make system-deps installs them as root)",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    root = tmp_path / "lab" / "notebooks"
    root.mkdir(parents=True)
    shutil.copy(NOTEBOOKS / "01_build_and_sign.ipynb", root)
    # the real Sming image notebook 1 reads (REAL_ROM = "../data/esp8266/rom0.bin")
    shutil.copytree(NOTEBOOKS.parent / "data" / "esp8266", root.parent / "data" / "esp8266")
    # every cell attached to the page (JupyterLab's default skips rendering cells out of view,
    # so on a slow machine the charts above the last cell may never be in the DOM together)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = free_port()
    log = open(tmp_path / "jupyter.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={TOKEN}",
            "--ServerApp.open_browser=False",
            "--allow-root",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_notebook_1_runs_in_jupyterlab_and_its_charts_render(jupyterlab):
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shot = os.environ.get("OTALAB_SCREENSHOT", "/tmp/otalab-browser.png")
    try:
        driver.get(f"{jupyterlab}/lab/tree/01_build_and_sign.ipynb?token={TOKEN}")
        wait = WebDriverWait(driver, 90)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        # the kernel must be idle before "Run All" (JupyterLab shows its status in the toolbar)
        wait.until(
            lambda d: d.execute_script(
                "const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
                "return s && s.getAttribute('data-status') === 'idle';"
            )
        )
        menu = "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"
        run_all = "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"
        started = (
            "return [...document.querySelectorAll('.jp-InputArea-prompt')]"
            ".some(p => /\\[(\\d+|\\*)\\]/.test(p.textContent));"
        )
        for _attempt in range(3):  # a kernel that only just said "idle" may drop the first request
            wait.until(ec.element_to_be_clickable((By.XPATH, menu))).click()
            wait.until(ec.element_to_be_clickable((By.XPATH, run_all))).click()
            try:
                WebDriverWait(driver, 30).until(lambda d: d.execute_script(started))
                break
            except TimeoutException:
                continue
        else:
            pytest.fail("Run All Cells never started a cell")
        # the last cell's output, then every chart (all cells stay attached: windowingMode none)
        WebDriverWait(driver, 240).until(
            lambda d: "VerificationFailed" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        )
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")) >= 2
        )
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('.jp-OutputArea-output img')]"
            ".map(i => [i.naturalWidth, i.naturalHeight]);"
        )
        assert all(w > 100 and h > 100 for w, h in sizes), sizes
        errors = driver.find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        tracebacks = [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]
        assert not tracebacks, tracebacks
        text = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        assert "VerificationFailed" in text  # the last cell: a flipped byte is rejected
    finally:
        driver.save_screenshot(shot)
        driver.quit()
