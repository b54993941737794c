"""The console's browser tests: Debian's chromium, driven by selenium through Debian's
chromedriver (nothing is downloaded), against a real stack: redis-server, a scheduler, two
workers and the API server (``python -m plankton.api``), each its own OS process.

One stack and one browser serve the whole module (starting them is most of the cost).
``CONSOLE_SCREENSHOTS=DIR`` saves a screenshot of each page the tests name into DIR
(``docs/img`` for the README: see docs/console.md).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.servers import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PLANKTON_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PLANKTON_CHROMEDRIVER", "/usr/bin/chromedriver")
IMPORTS = ["tests.console.console_tasks"]
TOKEN = "console-test-token-5d1f"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"browser tests need Debian's chromium and chromium-driver "
            f"(apt-get install -y chromium chromium-driver): {', '.join(missing)} "
            "not found"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("browser tests need selenium: pip install -e '.[dev]'")


class Stack:
    """Redis, a scheduler, two workers and API servers, as real processes."""

    def __init__(self, tmp: Path) -> None:
        self.redis = RedisServer(tmp / "redis").start()
        self.cluster = Cluster(self.redis.url, imports=IMPORTS, log_dir=tmp)
        self.cluster.start(["console-w1", "console-w2"])
        self.base = self.api()

    def api(self, **env: str) -> str:
        """Start an API server process; returns its base URL once it answers."""
        port = free_port()
        self.cluster._start(
            [
                "-m",
                "plankton.api",
                *[a for m in IMPORTS for a in ("--import", m)],
                "--port",
                str(port),
            ],
            f"api-{port}",
            **env,
        )
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base + "/healthz"), 20, 0.05, f"the API on {base}")
        return base

    def client(self):
        import plankton as pk

        return pk.Client(self.redis.url, imports=IMPORTS)

    def stop(self) -> None:
        self.cluster.kill_all()
        self.redis.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _need_browser()
    made = Stack(tmp_path_factory.mktemp("console"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def shot(browser):
    """``shot(name)``: with CONSOLE_SCREENSHOTS=DIR, save the page as DIR/console-NAME.png."""
    where = os.environ.get("CONSOLE_SCREENSHOTS")

    def take(name: str) -> None:
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(where) / f"console-{name}.png"))

    return take
