"""The app in a real browser: ``streamlit run`` + headless Chromium driven by Selenium.

Starts the server on a free port with a tiny zoo, opens every page, saves a screenshot of each under
``test-output/screenshots/`` and moves the Sparsity page's slider with the keyboard, checking that the
highlighted ticket's numbers and its per-layer density chart change. Skipped when Chromium or
chromedriver is missing (``make browser`` installs them on Debian).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = ROOT / "test-output" / "screenshots"
PAGES = [("home", ""), ("network", "network"), ("search", "search"), ("sparsity", "sparsity"),
         ("transfer", "transfer"), ("r2s_live", "r2s"), ("masks", "masks")]
WAIT_S = 60

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
                       reason="needs /usr/bin/chromium and chromedriver (make browser)"),
]
selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict, log_path: Path) -> subprocess.Popen:
    """``streamlit run app/main.py`` in its own process group (killed as a group)."""
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def make_driver(width: int = 1400, height: int = 1000):
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    return driver


def wait_rendered(driver, title: str | None = None, timeout: float = WAIT_S) -> None:
    """Until the app has drawn (``title`` in an h1, when given) and no script run is in progress."""
    def ready(d):
        if not d.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]'):
            return False
        if title is not None and not any(title in h.text for h in d.find_elements(By.TAG_NAME, "h1")):
            return False
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        return not any("Running" in (r.text or "") or r.get_attribute("data-test-state") == "running"
                       for r in running) and not d.find_elements(By.CSS_SELECTOR, '[data-testid="stSkeleton"]')
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(ready)
    time.sleep(0.5)   # let Plotly finish drawing before a screenshot


def metric(driver, label: str) -> str:
    for m in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        if m.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip() == label:
            return m.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
    raise AssertionError(f"no metric {label!r}")


def chart_titles(driver) -> list[str]:
    return [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .gtitle")]


TITLES = {"home": "RST Explorer", "network": "The random network", "search": "Search a robust scratch ticket",
          "sparsity": "Accuracy vs keep ratio", "transfer": "Transferability between tickets",
          "r2s_live": "R2S live", "masks": "Mask files"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "app"))
    import torch
    from tiny_zoo import build_tiny_zoo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        zoo = build_tiny_zoo(tmp_path_factory.mktemp("browser_zoo"))
    finally:
        torch.set_num_threads(threads)
    port = free_port()
    env = {**os.environ, "RST_ZOO_DIR": str(zoo["zoo_dir"]), "RST_TEST_SUBSET": str(zoo["subset"]),
           "OMP_NUM_THREADS": "1"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    proc = start_server(port, env, SHOTS.parent / "streamlit-server.log")
    try:
        wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def driver():
    d = make_driver(1400, 1600)
    try:
        yield d
    finally:
        d.quit()


def test_every_page_renders_and_is_screenshotted(server, driver):
    for name, path in PAGES:
        driver.get(f"{server}/{path}")
        wait_rendered(driver, TITLES[name])
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), f"exception on {name}"
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_sparsity_slider_with_the_keyboard_changes_the_charts(server, driver):
    driver.get(f"{server}/sparsity")
    wait_rendered(driver, TITLES["sparsity"])
    before = (metric(driver, "Keep ratio"), chart_titles(driver))
    assert before[0] == "0.3"
    # the thumb is a react-aria slider around a visually hidden <input type="range">: focus it, press →
    thumb = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
    driver.execute_script("arguments[0].focus();", thumb)
    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: metric(d, "Keep ratio") == "0.5")
    wait_rendered(driver, TITLES["sparsity"])
    after = (metric(driver, "Keep ratio"), chart_titles(driver))
    assert any("keep0.5" in t for t in after[1]), after[1]          # the per-layer density chart moved too
    assert after[1] != before[1]
    driver.save_screenshot(str(SHOTS / "sparsity_after_slider.png"))
