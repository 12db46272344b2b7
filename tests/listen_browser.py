"""Headless Chromium for the listening tools' browser tests and screenshots (Debian's chromium + chromium-driver).

`require_browser` skips a test when the browser is absent, unless ``CMIRM_REQUIRE_BROWSER`` is set
(CI sets it, so a missing browser fails there). `chromium` starts a fresh driver with the flags
that keep Chromium off the network; `review_server` runs ``cmirm review`` in a subprocess on a
free loopback port and stops it (by its own pid) afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required")
#: Generous waits: the machine may be busy.
WAIT = 90
SERVER_START = 180


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def require_browser() -> tuple[str, str]:
    """The browser's paths; skip (or fail, with ``CMIRM_REQUIRE_BROWSER`` set) when it is not installed."""
    paths = browser_paths()
    if paths is None:
        reason = ("headless Chromium is not installed (apt-get install -y chromium chromium-driver); "
                  "set CMIRM_REQUIRE_BROWSER=1 to make this a failure")
        if os.environ.get("CMIRM_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    return paths


@contextmanager
def chromium(size: tuple[int, int] = (1400, 1000)) -> Iterator["object"]:
    """A headless Chromium WebDriver with a fresh profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="cmirm-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")   # never let Selenium Manager look for drivers online
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: object, condition, timeout: float = WAIT, message: str = ""):
    """`WebDriverWait(driver, timeout).until(condition)`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cmirm_executable() -> str:
    """The ``cmirm`` script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "cmirm"
    return str(script) if script.exists() else shutil.which("cmirm") or "cmirm"


@contextmanager
def review_server(run_dir: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cmirm review RUN_DIR --port <free> ARGS`` until the block ends; yields its URL."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="cmirm-review-", suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen([cmirm_executable(), "review", str(run_dir), "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            if process.poll() is not None:
                raise AssertionError(f"cmirm review exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"cmirm review did not answer on {url} in {SERVER_START}s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.unlink(missing_ok=True)
