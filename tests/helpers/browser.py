"""Headless Chromium (Debian's chromium + chromedriver) driven by Selenium, for the tests that
check a page as a user sees it (tests/e2e/test_plots_offline.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# The flags tests/e2e/test_mlflow_ui.py starts Chromium with: headless in a container (no
# sandbox, no GPU, /tmp instead of a small /dev/shm) and none of its own background traffic.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
# No network at all: no name resolves, and anything that would go out goes to a proxy on a
# port nothing listens on. A page then works only with what it carries.
OFFLINE_FLAGS = ('--host-resolver-rules=MAP * ~NOTFOUND', "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=<-loopback>")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (apt-get install {pkg})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium missing (pip install selenium, or -e '.[dev]')"
    return None


@contextmanager
def chromium(profile: Path, *flags: str, window: tuple[int, int] = (1400, 2400)
             ) -> Iterator[Any]:
    """A headless Chromium WebDriver with its own profile in ``profile`` and extra ``flags``;
    its console is kept (``driver.get_log("browser")``); quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *flags, f"--window-size={window[0]},{window[1]}",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
