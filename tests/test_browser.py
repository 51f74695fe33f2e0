"""A real browser: JupyterLab on localhost, notebooks 1 and 2 run in headless Chromium, their charts
rendered, and notebook 2's live console seen updating while the board takes the update and ending
with it applied. Screenshots go to the test's temporary folder.

Every run starts as on a fresh clone (JupyterLab's config, settings, workspaces and runtime
files in the test's own folder), and the notebook is opened on a kernel started for it
beforehand through the server's REST API: JupyterLab attaches to that session instead of
choosing a kernel itself. "Run All" is pressed only once the page is attached to that kernel
and it is idle; a kernel dialog that shows up anyway is answered (python3), any other fails
the test at once with its text.

The server binds a port of the system's choosing and is ready once the info file it writes names that
port and it lists the kernelspec there (its own token: no other test's server can answer). A failure
carries the tail of the server's log (tmp_path/jupyter.log).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
DATA = NOTEBOOKS.parent / "data"
NOTEBOOKS_RUN = ("01_build_and_sign.ipynb", "02_publish_and_watch.ipynb")
KERNEL = "python3"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="needs Debian's chromium and chromium-driver (make system-deps installs them as root)",
    ),
]


def log_tail(log: Path, chars: int = 4000) -> str:
    """The end of the Jupyter server's log, for a failure message."""
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return f"\n--- tail of {log} ---\n{text[-chars:]}"


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server: its base URL and the log it writes."""

    url: str
    token: str
    log: Path

    def api(self, path: str, body: dict | None = None) -> dict:
        """A call to the server's REST API (token authentication); an HTTP error fails with the server's log."""
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            pytest.fail(f"{request.method} /api/{path}: HTTP {error.code} {detail}{log_tail(self.log)}")

    @contextmanager
    def explaining_failures(self):
        """Any failure inside (a Selenium timeout, an assertion) fails with the tail of the server's log."""
        try:
            yield
        except Exception as error:
            pytest.fail(f"{type(error).__name__}: {error}{log_tail(self.log)}")


def start_kernel_session(lab: Lab, notebook: str) -> str:
    """A session for the notebook on an explicit kernel (the server starts it); the kernel's id."""
    body = {"path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": KERNEL}}
    session = lab.api("sessions", body)
    assert session["kernel"]["name"] == KERNEL, session
    return str(session["kernel"]["id"])


def server_url(runtime: Path, pid: int) -> str | None:
    """The URL the server with ``pid`` listens on, from the info file it writes once its port is bound."""
    try:
        info = json.loads((runtime / f"jpserver-{pid}.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return None
    return f"http://127.0.0.1:{info['port']}" if info.get("pid") == pid else None


def serving(url: str, token: str) -> bool:
    """True once the server answers its REST API and lists the kernel the tests start."""
    request = urllib.request.Request(f"{url}/api/kernelspecs", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return KERNEL in json.loads(response.read()).get("kernelspecs", {})
    except (OSError, ValueError):  # not listening yet (HTTPError is an OSError too)
        return False


@pytest.fixture
def jupyterlab(tmp_path):
    root = tmp_path / "lab" / "notebooks"
    root.mkdir(parents=True)
    for notebook in NOTEBOOKS_RUN:
        shutil.copy(NOTEBOOKS / notebook, root)
    # the notebook's relative paths (../data/...) resolve as in the repository; what it writes stays here
    shutil.copytree(DATA, root.parent / "data", ignore=shutil.ignore_patterns("notebooks"))
    state = tmp_path / "jupyter"  # nothing from earlier runs or the user's ~/.jupyter
    # every cell attached to the page (JupyterLab's default skips rendering cells out of view,
    # so on a slow machine the charts above the last cell may never be in the DOM together)
    tracker = state / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    # no "official Jupyter news?" toast over the screenshots
    notifications = state / "settings" / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True)
    (notifications / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
    }
    token = secrets.token_hex(16)  # a server of another test (same URL by mishap) answers 403, not 200
    log_path = tmp_path / "jupyter.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            # the server binds a port the system picks and names it in its info file: no port chosen here
            # that another process could take first (the server would move to a neighbour, silently)
            "--port=0",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
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
    # ready: this server's info file names its port, and it answers there with the kernelspec listed
    deadline = time.monotonic() + 120
    url = None
    while not (url and serving(url, token)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("JupyterLab did not start" + log_tail(log_path))
        url = url or server_url(state / "runtime", proc.pid)
        time.sleep(0.2)
    try:
        yield Lab(url, token, log_path)
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


def all_cells_ran(driver) -> bool:
    """True when every code cell shows an execution count (``[3]:``), none waiting or running."""
    return bool(
        driver.execute_script(
            "const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];"
            "return p.length > 0 && p.every(e => /^\\[\\d+\\]:$/.test(e.textContent.trim()));"
        )
    )


def tracebacks(driver) -> list[str]:
    """The text of error outputs (a cell that raised, or a traceback printed on stderr)."""
    from selenium.webdriver.common.by import By

    outputs = driver.find_elements(
        By.CSS_SELECTOR,
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
        " .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']",
    )
    return [e.text for e in outputs if "Traceback" in e.text or "Error" in e.text]


def live_console(driver) -> dict:
    """Notebook 2's live console as the page shows it: progress attributes and the console's text."""
    return dict(
        driver.execute_script(
            "const v = document.querySelector('.otalab-live');"
            "if (!v) return {};"
            "const p = v.querySelector('.otalab-progress');"
            "return {fraction: parseFloat(p.dataset.fraction), outcome: p.dataset.outcome || null,"
            " status: p.textContent, console: v.querySelector('.otalab-console').textContent};"
        )
    )


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    try:
        yield driver
    finally:
        driver.quit()


def run_all(driver, lab: Lab, notebook: str) -> None:
    """Open ``notebook`` on a kernel started for it and press Run All once the page is attached and idle."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    kernel_id = start_kernel_session(lab, notebook)
    driver.get(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    wait = WebDriverWait(driver, 90)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
    # the page is attached to the kernel started for it (not one of its own choosing) ...
    wait.until(lambda d: lab.api(f"kernels/{kernel_id}").get("connections", 0) >= 1)
    assert [s["kernel"]["id"] for s in lab.api("sessions")] == [kernel_id]
    # ... and shows it idle (the indicator also reads "idle" before any kernel is attached)
    wait.until(lambda d: kernel_ready(d) or answer_dialog(d))
    run_menu = "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']"
    wait.until(ec.element_to_be_clickable((By.XPATH, run_menu)))
    driver.find_element(By.XPATH, run_menu).click()
    run_all_item = "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"
    wait.until(ec.element_to_be_clickable((By.XPATH, run_all_item))).click()
    # the first code cell runs (a kernel dialog would stop it: answer it)
    wait.until(lambda d: answer_dialog(d) or first_prompt(d) not in ("", "[ ]:"))


def wait_until_done(driver, timeout: float = 240) -> None:
    """Every cell ran, or fail at once with the first error output."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: answer_dialog(d) or bool(tracebacks(d)) or all_cells_ran(d))
    assert not tracebacks(driver), tracebacks(driver)


def chart_sizes(driver) -> list[list[int]]:
    """Natural sizes of the charts (``img`` outputs) on the page."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('.jp-OutputArea-output img')]"
            ".map(i => [i.naturalWidth, i.naturalHeight]);"
        )
    )


def test_notebook_1_runs_in_jupyterlab_and_its_charts_render(jupyterlab, browser, tmp_path):
    from selenium.webdriver.common.by import By

    try:
        with jupyterlab.explaining_failures():
            run_all(browser, jupyterlab, "01_build_and_sign.ipynb")
            wait_until_done(browser)
            sizes = chart_sizes(browser)
            assert len(sizes) >= 2 and all(w > 100 and h > 100 for w, h in sizes), sizes
            text = browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
            assert "VerificationFailed" in text  # the flipped byte's cell: the device rejects it
    finally:
        browser.save_screenshot(str(tmp_path / "01_build_and_sign.png"))


def test_notebook_2_shows_the_update_live_in_jupyterlab(jupyterlab, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        with jupyterlab.explaining_failures():
            run_all(browser, jupyterlab, "02_publish_and_watch.ipynb")
            # while the board takes the update: the console shows its lines, the bar part of the way
            midway = WebDriverWait(browser, 120, poll_frequency=0.2).until(
                lambda d: (lambda v: v if 0 < v.get("fraction", 0) < 1 else False)(live_console(d))
            )
            browser.execute_script("document.querySelector('.otalab-live').scrollIntoView({block: 'center'})")
            browser.save_screenshot(str(tmp_path / "02_publish_and_watch-live.png"))
            assert "Update slot rom1" in midway["console"] and "received:" in midway["console"]
            assert midway["outcome"] is None and "Currently running rom1" not in midway["console"]
            wait_until_done(browser)
            final = live_console(browser)
            assert final["fraction"] == 1.0 and final["outcome"] == "updated", final["status"]
            assert "100% received" in final["status"] and "KB/s" in final["status"]
            for line in ("Update slot rom1", "Switching was successful. Restarting...", "Currently running rom1"):
                assert line in final["console"], line
            sizes = chart_sizes(browser)
            assert sizes and all(w > 100 and h > 100 for w, h in sizes), sizes
    finally:
        browser.save_screenshot(str(tmp_path / "02_publish_and_watch.png"))
