"""A real headless Chromium (Debian's, installed by `make install`) and a page that leaves a screenshot."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orchestration.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

# Playwright's own browser download needs the internet; the Makefile installs Debian's chromium instead.
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
# Both UIs are single-page apps that load their data after the page: on a busy 2-core CI box the first
# render of a page takes well over Playwright's 5 s default.
UI_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1600, "height": 1000}

expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium at /usr/bin/chromium, driven through Playwright's sync API, for the whole session."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium; `make install` installs it "
                    "(apt-get install -y chromium)", pytrace=False)
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to start as root, which is how CI and the dev boxes run.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        logger.info("Chromium %s", launched.version)
        yield launched
        launched.close()


def _screenshot_name(test_name: str) -> str:
    """A file name for a test's screenshot: parametrize brackets and other odd characters become '_'."""
    return re.sub(r"[^\w.-]+", "_", test_name).strip("_") + ".png"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context; after the test, passed or failed, a full-page screenshot of where it ended."""
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield opened
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / _screenshot_name(request.node.name)
        try:
            opened.screenshot(path=str(path), full_page=True)
            logger.info("screenshot: %s", path)
        finally:
            context.close()
