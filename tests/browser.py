"""The app in a real browser, for the browser test and the app benchmark: ``streamlit run app``
on a free port (its own process group) and headless Chromium driven by Selenium.

Chromium runs with ``--headless --no-sandbox --disable-gpu --disable-background-networking
--disable-component-update --no-first-run`` (Debian's ``chromium`` + ``chromium-driver``: ``make browser``).
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

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 60




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict, log_path: Path) -> subprocess.Popen:
    """``streamlit run app`` (the folder entry, as ``make app`` starts it) headless, in its own process group (stopped as a group)."""
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app", "--server.headless", "true",
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
            time.sleep(0.05)
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
    from selenium import webdriver
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


def click_page_link(driver, path: str) -> None:
    """Navigate as a user does: click the sidebar's link to ``path`` ("" for the home page)."""
    from selenium.webdriver.common.by import By
    for link in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]'):
        href = link.get_attribute("href") or ""
        tail = href.rstrip("/").rsplit("/", 1)[-1]
        if (path and tail == path) or (not path and href.rstrip("/").count("/") == 2):
            link.click()
            return
    raise LookupError(f"no sidebar link to /{path}")


def wait_rendered(driver, title: str | None = None, timeout: float = WAIT_S, settle: float = 0.5) -> None:
    """Until the app has drawn (``title`` in an h1, when given) and no script run is in progress."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        if not d.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]'):
            return False
        if title is not None and not any(title in h.text for h in d.find_elements(By.TAG_NAME, "h1")):
            return False
        # the status widget shows an icon (no text) while a script run is in progress
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stSkeleton"]'):
            return False
        charts = d.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')    # drawn, not placeholders
        return all(c.find_elements(By.CSS_SELECTOR, ".main-svg") for c in charts)
    WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)).until(ready)
    time.sleep(settle)   # let Plotly finish drawing before a screenshot
