"""The app in a real browser: ``streamlit run`` + headless Chromium driven by Selenium.

Starts the server on a free port with a tiny zoo, opens every page, saves a screenshot of each under
``test-output/screenshots/`` and moves the Sparsity page's slider with the keyboard, checking that the
highlighted ticket's numbers and its per-layer density chart change. Skipped when Chromium or
chromedriver is missing (``make browser`` installs them on Debian).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
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
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from browser import make_driver, start_server, stop_server, wait_healthy, wait_rendered, free_port  # noqa: E402


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
        try:
            wait_rendered(driver, TITLES[name])
        finally:
            driver.save_screenshot(str(SHOTS / f"{name}.png"))
        errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert not errors, f"exception on {name}: {errors[0].text[:2000]}"


def test_the_page_icon_and_every_resource_come_from_the_app_server(server, driver):
    """Offline: the favicon is the shipped assets/favicon.png, and the page asks no other host for anything."""
    driver.get(f"{server}/")
    wait_rendered(driver, TITLES["home"])
    icons = [e.get_attribute("href") for e in driver.find_elements(By.CSS_SELECTOR, "link[rel*='icon']")]
    assert icons and all(h.startswith(server) for h in icons), icons
    import urllib.request
    with urllib.request.urlopen(icons[0], timeout=10) as r:
        assert r.read()[:8] == (ROOT / "assets" / "favicon.png").read_bytes()[:8]
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(u.startswith(server) or u.startswith("data:") or u.startswith("blob:")
                             for u in resources), [u for u in resources if not u.startswith(server)]


def test_home_loads_the_other_pages_chart_and_table_code_while_it_is_read(server, driver):
    """app/preload.py: after Home is drawn the browser fetches Plotly's and the data grid's code, which
    Home itself does not show, so that the next page with a chart does not wait for them."""
    sys.path.insert(0, str(ROOT / "app"))
    import preload
    files = preload.chunk_files()
    assert {f.split(".")[0] for f in files} == set(preload.CHUNKS)     # every chunk found in this Streamlit
    driver.get(f"{server}/")
    wait_rendered(driver, TITLES["home"], settle=0.0)
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"], [data-testid="stDataFrame"]')

    def fetched(d):
        names = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name.split('/').pop())")
        return all(f in names for f in files)
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 20, poll_frequency=0.1).until(fetched)
    errors = driver.execute_script("return window.__rstPreloadErrors || []")
    assert errors == []


def test_sparsity_slider_with_the_keyboard_changes_the_charts(server, driver):
    driver.get(f"{server}/sparsity")
    wait_rendered(driver, TITLES["sparsity"])
    before = (metric(driver, "Keep ratio"), chart_titles(driver))
    assert before[0] == "0.3"
    # the thumb is a react-aria slider around a visually hidden <input type="range">: focus it, press →
    thumb = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
    driver.execute_script("arguments[0].focus();", thumb)
    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,
                                                                         AssertionError)).until(
        lambda d: metric(d, "Keep ratio") == "0.5")
    wait_rendered(driver, TITLES["sparsity"])
    after = (metric(driver, "Keep ratio"), chart_titles(driver))
    assert any("keep0.5" in t for t in after[1]), after[1]          # the per-layer density chart moved too
    assert after[1] != before[1]
    driver.save_screenshot(str(SHOTS / "sparsity_after_slider.png"))


def _set_number(driver, label: str, value) -> None:
    el = driver.find_element(By.CSS_SELECTOR, f'[data-testid="stNumberInput"] input[aria-label="{label}"]')
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(str(value))


def _button(driver, text: str):
    return driver.find_element(By.XPATH, f'//button[.//p[normalize-space()="{text}"]]')


def _text_present(driver, text: str) -> bool:
    return text in driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text


def _epoch_shown(driver) -> int:
    """The epoch number in the live panel's progress text ("epoch 3/200 · step ..."), else 0."""
    import re
    m = re.search(r"epoch (\d+)/200", driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text)
    return int(m.group(1)) if m else 0


def test_r2s_live_attack_in_the_browser(server, driver):
    driver.get(f"{server}/r2s")
    wait_rendered(driver, TITLES["r2s_live"])
    _set_number(driver, "Test images", 16)
    _set_number(driver, "Steps", 2)
    _button(driver, "Attack").click()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.3,
                  ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: _text_present(d, "Gallery"))
    wait_rendered(driver, TITLES["r2s_live"])
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert "% ±" in metric(driver, "worst member")                 # every accuracy with its standard error
    _button(driver, "Explain").click()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: any("predicts" in t.text for t in d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .annotation")))
    wait_rendered(driver, TITLES["r2s_live"])
    driver.set_window_size(1400, 3400)
    try:
        time.sleep(1.0)
        driver.save_screenshot(str(SHOTS / "r2s_live_after_attack.png"))
    finally:
        driver.set_window_size(1400, 1600)


def test_r2s_live_stop_in_the_browser_keeps_the_partial_numbers(server, driver):
    """A long run shows its first numbers while it goes on; Stop ends it and the numbers stay."""
    driver.get(f"{server}/r2s")
    wait_rendered(driver, TITLES["r2s_live"])
    _set_number(driver, "Test images", 256)
    _set_number(driver, "Steps", 200)
    _button(driver, "Attack").click()
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: _text_present(d, "images attacked") and d.find_elements(
        By.XPATH, '//button[.//p[normalize-space()="Stop"]]'))
    wait.until(lambda d: _text_present(d, "(refining)"))              # partial numbers, the run still going
    _button(driver, "Stop").click()
    WebDriverWait(driver, 10, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: _text_present(d, "Stopped: the numbers below are from the"))
    assert "% ±" in metric(driver, "worst member")
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_search_runs_live_and_the_stop_button_stops_it(server, driver):
    driver.get(f"{server}/search")
    wait_rendered(driver, TITLES["search"])
    _set_number(driver, "Epochs", 200)
    _set_number(driver, "Training images", 64)
    _button(driver, "Start search").click()
    # the live panel (a fragment polling the background thread) shows progress and a stop button
    WebDriverWait(driver, WAIT_S, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: _epoch_shown(d) >= 2)
    driver.save_screenshot(str(SHOTS / "search_running.png"))
    _button(driver, "Stop").click()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.3,
                  ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: _text_present(d, "stopped early"))
    wait_rendered(driver, TITLES["search"])
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    driver.save_screenshot(str(SHOTS / "search_stopped.png"))
