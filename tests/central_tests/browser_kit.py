"""A real browser for the console's tests: Playwright for Python driving Debian's Chromium (never a
downloaded browser), a signed-in page, and the screenshots docs/console.md shows.

The screenshots are always taken (each page at desktop and phone width), but written over
docs/console/*.png only when `LOCKERGW_SCREENSHOTS=docs` is set, so an ordinary test run leaves the
working tree clean; otherwise they go to a temporary folder (or the folder that variable names)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import ViewportSize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


def screenshot_folder() -> Path:
    """docs/console with `LOCKERGW_SCREENSHOTS=docs`, the folder it names otherwise, else a temporary one."""
    wanted = os.environ.get("LOCKERGW_SCREENSHOTS", "")
    if wanted == "docs":
        return DOCS_SCREENSHOTS
    if wanted:
        return Path(wanted)
    return Path(tempfile.gettempdir()) / "lockergw-console-screenshots"


DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
#: How long the browser waits for something live to show (the console pushes within about a second).
LIVE_MS = 20_000

needs_browser = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or not shutil.which("mosquitto"),
    reason="needs Debian's chromium (apt-get install chromium) and mosquitto",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: object, base: str, name: str, password: str) -> None:
    from playwright.async_api import Page

    assert isinstance(page, Page)
    await page.goto(f"{base}/console/signin")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def screenshots(page: object, name: str) -> None:
    """`{name}-desktop.png` and `…-phone.png` of the page now (full length), see `screenshot_folder`."""
    from playwright.async_api import Page

    assert isinstance(page, Page)
    folder = screenshot_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)
