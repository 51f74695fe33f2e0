"""A real browser: JupyterLab on localhost, notebook 1 run in headless Chromium, its chart rendered.

Every run starts as on a fresh clone (JupyterLab's config, settings, workspaces and runtime
files in the test's own folder), and the notebook is opened on a kernel started for it
beforehand through the server's REST API: JupyterLab attaches to that session instead of
choosing a kernel itself. "Run All" is pressed only once the page is attached to that kernel
and it is idle; a kernel dialog that shows up anyway is answered (python3), any other fails
the test at once with its text.
"""

from __future__ import annotations

import json
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
DATA = NOTEBOOKS.parent / "data"
TOKEN = "otalab-browser-test"
NOTEBOOK = "01_build_and_sign.ipynb"
KERNEL = "python3"

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


def api(url: str, path: str, body: dict | None = None) -> dict:
    """A call to the Jupyter server's REST API (token authentication)."""
    request = urllib.request.Request(
        f"{url}/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_kernel_session(url: str) -> str:
    """A session for the notebook on an explicit kernel (the server starts it); the kernel's id."""
    session = api(url, "sessions", {"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook", "kernel": {"name": KERNEL}})
    assert session["kernel"]["name"] == KERNEL, session
    return str(session["kernel"]["id"])


@pytest.fixture
def jupyterlab(tmp_path):
    root = tmp_path / "lab" / "notebooks"
    root.mkdir(parents=True)
    shutil.copy(NOTEBOOKS / NOTEBOOK, root)
    # the notebook's relative paths (../data/...) resolve as in the repository; what it writes stays here
    shutil.copytree(DATA, root.parent / "data", ignore=shutil.ignore_patterns("notebooks"))
    state = tmp_path / "jupyter"  # nothing from earlier runs or the user's ~/.jupyter
    # every cell attached to the page (JupyterLab's default skips rendering cells out of view,
    # so on a slow machine the charts above the last cell may never be in the DOM together)
    tracker = state / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
    }
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
            f"--LabApp.user_settings_dir={state / 'settings'}",
            f"--LabApp.workspaces_dir={state / 'workspaces'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env=env,
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


def kernel_ready(driver) -> bool:
    """True when the notebook's toolbar names the kernel and its execution indicator reads idle."""
    return bool(
        driver.execute_script(
            "const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            "const k = document.querySelector('.jp-KernelName');"
            "return !!(s && s.getAttribute('data-status') === 'idle' && k && /Python 3/.test(k.textContent));"
        )
    )


def first_prompt(driver) -> str:
    """The execution prompt of the first code cell (``[ ]:``, ``[*]:``, ``[1]:``)."""
    return str(
        driver.execute_script(
            "const p = document.querySelector('.jp-CodeCell .jp-InputPrompt'); return p ? p.textContent.trim() : '';"
        )
    )


def answer_dialog(driver) -> bool:
    """Accept a kernel dialog (its default choice is the notebook's python3); fail on any other. Always False."""
    from selenium.webdriver.common.by import By

    for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
        title = dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-header").text
        if "Kernel" not in title:
            pytest.fail(f"unexpected JupyterLab dialog: {dialog.text}")
        dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-button.jp-mod-accept").click()
    return False


def test_notebook_1_runs_in_jupyterlab_and_its_charts_render(jupyterlab):
    from selenium import webdriver
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
        kernel_id = start_kernel_session(jupyterlab)
        driver.get(f"{jupyterlab}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        wait = WebDriverWait(driver, 90)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        # the page is attached to the kernel started for it (not one of its own choosing) ...
        wait.until(lambda d: api(jupyterlab, f"kernels/{kernel_id}").get("connections", 0) >= 1)
        assert [s["kernel"]["id"] for s in api(jupyterlab, "sessions")] == [kernel_id]
        # ... and shows it idle (the indicator also reads "idle" before any kernel is attached)
        wait.until(lambda d: kernel_ready(d) or answer_dialog(d))
        wait.until(
            ec.element_to_be_clickable((By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"))
        )
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
        run_all = "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"
        item = wait.until(ec.element_to_be_clickable((By.XPATH, run_all)))
        item.click()
        # the first code cell runs (a kernel dialog would stop it: answer it)
        wait.until(lambda d: answer_dialog(d) or first_prompt(d) not in ("", "[ ]:"))
        # the last cell's output, then every chart (all cells stay attached: windowingMode none)
        WebDriverWait(driver, 240).until(
            lambda d: answer_dialog(d) or "VerificationFailed" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
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
