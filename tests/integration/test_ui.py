"""tether ui in a real headless browser (Debian's chromium, driven by Selenium's chromedriver)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from nshost import PYTHON, NamespaceHost

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (./run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    # The driver from apt, never one Selenium would download.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def start_ui(h: NamespaceHost) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, TETHER_HOST=f"unix://{h.socket}")
    proc = subprocess.Popen(
        [PYTHON, "-m", "tether.cli.main", "ui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("tether ui: open http://127.0.0.1:"), line + proc.stderr.read()  # type: ignore[union-attr]
    return proc, line.split("open ", 1)[1].strip()


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(driver: Any, script: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    return None


def graph_text(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('graph').textContent"))


def test_live_page_shows_updates_inspects_and_explains(bhost: NamespaceHost, browser: Any) -> None:
    from selenium.webdriver.support.select import Select

    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed")
    h = bhost
    h.ok("network", "create", "--subnet", "10.81.0.0/24", "front")
    h.ok("network", "create", "--internal", "--subnet", "10.82.0.0/24", "back")
    h.ok("run", "-d", "--name", "web", "--network", "front", "busybox", "httpd", "-f", "-p", "80")
    h.ok("run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "600")
    proc, url = start_ui(h)
    try:
        base, _, token = url.partition("/?token=")
        # Nothing without the token, nor with another Host (DNS rebinding), nor beyond loopback.
        assert status_of(base + "/") == 403
        assert status_of(base + "/topology.json?token=wrong") == 403
        assert status_of(f"{base}/topology.json?token={token}") == 200
        assert status_of(f"{base}/topology.json?token={token}", {"Host": "evil.example:80"}) == 403
        assert base.startswith("http://127.0.0.1:")
        # The kernel's socket table: the page's only listening socket is on 127.0.0.1.
        listening = subprocess.run(
            ["ss", "-Hltnp"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        mine = [line.split()[3] for line in listening if f"pid={proc.pid}," in line]
        assert mine == [base.removeprefix("http://")], listening

        browser.get(url)
        assert wait_for(browser, "return document.querySelector('#graph svg') !== null", 15)
        text = graph_text(browser)
        for name in ("front", "back", "web", "db", "internal: no way out"):
            assert name in text
        assert wait_for(
            browser, "return document.getElementById('status').textContent === 'live'", 10
        )

        # A container started elsewhere shows up without a reload, within 2 seconds.
        browser.execute_script("window.__marker = 1")
        h.ok("run", "-d", "--name", "late", "--network", "front", "busybox", "sleep", "600")
        started = time.monotonic()
        # Drawn, and running (the explain form lists running containers only: a redraw
        # made at its create event shows it grey, not yet there).
        seen = wait_for(
            browser,
            "return document.getElementById('graph').textContent.includes('late')"
            " && [...document.getElementById('from').options].some(o => o.value === 'late')",
            5,
        )
        elapsed = time.monotonic() - started
        assert seen, graph_text(browser)
        assert elapsed < 2.0, f"the page took {elapsed:.2f} s"
        assert browser.execute_script("return window.__marker") == 1  # (no reload)

        # Clicking a container shows its inspect.
        web_id = h.api.get("/containers/web/json")["Id"]
        clicked = browser.execute_script(
            "const a = document.querySelector('#graph a[*|href=\"#c-' + arguments[0] + '\"]');"
            "if (!a) return false;"
            "a.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}));"
            "return true;",
            web_id,
        )
        assert clicked
        shown = wait_for(
            browser,
            "const p = document.getElementById('inspect'); return !p.hidden && p.textContent",
            5,
        )
        assert shown and f'"Id": "{web_id}"' in shown
        assert browser.find_element("id", "inspect-name").text == "container web"

        # The explain form asks the daemon (POST /tether/explain) and shows its verdict.
        Select(browser.find_element("id", "from")).select_by_value("late")
        Select(browser.find_element("id", "to")).select_by_value("db")
        port = browser.find_element("id", "port")
        port.clear()
        port.send_keys("80/tcp")
        browser.find_element("id", "explain-go").click()
        verdict = wait_for(
            browser,
            "const v = document.getElementById('verdict').textContent;"
            "return v.includes('reachable') || v.startsWith('error') ? v : ''",
            20,
        )
        assert verdict == "late -> db 80/tcp: not reachable", verdict
        reasons = browser.find_element("id", "reasons").text
        assert reasons and "fix:" in reasons
    finally:
        proc.terminate()
        proc.wait(10)
