"""The console in a real browser (Chromium through Playwright) against the real parts: `lockergw run` on
the project's simulators, a private Mosquitto, and `lockergw central` serving the console — what the
facilities team would see. Each page is also photographed at desktop and phone width for docs/console.md.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from broker.mosquitto import Mosquitto
from gateway_world import Daemon, devices_online_all, running, write_site
from playwright.async_api import Browser, Page, expect

from central_tests.browser_kit import LIVE_MS, chromium, free_port, needs_browser, screenshots, sign_in
from central_tests.kit import CentralProcess, write_central_config
from simulators.site import SimulatedSite

pytestmark = [pytest.mark.timeout(240), needs_browser]
SITE = "test-site"
PASSWORD = "correct horse battery"
CARD = "3C00CE754C"


@dataclass
class Estate:
    base: str
    central: CentralProcess
    gateway: Daemon
    site: SimulatedSite
    gateway_config: Path
    central_config: Path
    browser: Browser


def lockergw(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def add_user(config: Path, name: str, role: str) -> None:
    done = lockergw("central", "user", "add", "--name", name, "--role", role, "--config", str(config), stdin=PASSWORD)
    assert done.returncode == 0, done.stderr


@pytest.fixture
async def estate(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[Estate]:
    gateway_config, gateway_settings = write_site(tmp_path / "gw", broker.url)
    port = free_port()
    central_config = write_central_config(tmp_path, f"sqlite:///{tmp_path / 'central.db'}", broker.url)
    text = central_config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    central_config.write_text(text + f'[signing]\nhmac_key_file = "{tmp_path / "gw" / "signing.key"}"\n')
    for name, role in (("olive", "operator"), ("adam", "admin"), ("vera", "viewer")):
        add_user(central_config, name, role)
    central = CentralProcess(central_config, tmp_path / "central.log").start()
    try:
        async with SimulatedSite(gateway_settings) as site, running(gateway_config) as gw, chromium() as browser:
            await devices_online_all(gw)
            assert isinstance(browser, Browser)
            yield Estate(f"http://127.0.0.1:{port}", central, gw, site, gateway_config, central_config, browser)
    finally:
        central.stop()


async def new_page(estate: Estate, name: str) -> Page:
    page = await (await estate.browser.new_context(viewport={"width": 1280, "height": 860})).new_page()
    await sign_in(page, estate.base, name, PASSWORD)
    await expect(page.get_by_role("heading", name="Estate")).to_be_visible()
    return page


async def issue_card(page: Page, holder: str, key: str, locker: str) -> None:
    await page.get_by_role("link", name="People and keys").click()
    await page.get_by_label("Holder", exact=True).fill(holder)
    await page.get_by_label("Key id", exact=True).fill(key)
    await page.get_by_label("Kind").select_option("card")
    await page.get_by_label("Card number (not for a physical key)").fill(CARD)
    await page.get_by_label("Lockers (comma-separated)").fill(locker)
    await page.get_by_role("button", name="Issue").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Issued card {key} to {holder} (issue 1, uid …754C)")


async def test_issue_tap_lost_alert_acknowledge_and_report_in_a_real_browser(estate: Estate) -> None:
    page = await new_page(estate, "olive")
    await expect(page.locator("#estate")).to_contain_text("gw-e2e", timeout=LIVE_MS)
    await expect(page.locator("#estate")).to_contain_text("online", timeout=LIVE_MS)
    await screenshots(page, "estate")

    await issue_card(page, "u-1", "C-1", "A-01")
    assert CARD not in await page.content()
    pushed = await estate.gateway.wait_for("credentials.changed")  # central pushed it to the gateway
    await screenshots(page, "people")

    await page.get_by_role("link", name="Estate").click()
    await page.get_by_role("link", name=SITE).click()
    a01 = page.locator('[data-locker="A-01"]')
    await expect(a01).to_be_visible(timeout=LIVE_MS)
    await expect(a01.locator(".holder")).to_have_text("–")
    await page.evaluate("window.notReloaded = true")
    await estate.site.tap("bank-a", CARD)
    await estate.gateway.wait_for("access.granted", locker="A-01")
    await expect(a01.locator(".holder")).to_have_text("u-1", timeout=LIVE_MS)
    await expect(a01.locator(".door")).to_contain_text("open", timeout=LIVE_MS)
    assert await page.evaluate("window.notReloaded") is True
    await screenshots(page, "locker-bank")
    await estate.site.close("A-01")

    await page.goto(f"{estate.base}/console/people/{SITE}/C-1")
    await page.get_by_label("Mark as").select_option("lost")
    await page.get_by_label("Reason (optional)").fill("left on the bus")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.get_by_role("status")).to_contain_text("C-1 is now lost")
    await estate.gateway.wait_for("credentials.changed", since=pushed["seq"])
    await screenshots(page, "key")

    await page.get_by_role("link", name="Alerts").click()
    await page.evaluate("window.notReloaded = true")
    await estate.site.tap("bank-a", CARD)
    await estate.gateway.wait_for("credential.lost_presented")
    lost = page.locator('tr.alert-open[data-kind="credential.lost_presented"]')
    await expect(lost).to_be_visible(timeout=LIVE_MS)
    assert await page.evaluate("window.notReloaded") is True
    await screenshots(page, "alerts")
    await lost.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator('tr.alert-acknowledged[data-kind="credential.lost_presented"]')).to_contain_text("olive")

    await page.get_by_role("link", name="Events").click()
    await expect(page.locator('tr.event[data-kind="credential.lost_presented"]').first).to_be_visible()
    await screenshots(page, "events")

    await page.get_by_role("link", name="Reports").click()
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download holders.csv").click()
    download = await download_info.value
    rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
    assert [(r["site"], r["locker"], r["holder"], r["credential"]) for r in rows] == [(SITE, "A-01", "u-1", "C-1")]
    await screenshots(page, "reports")
    assert CARD not in estate.central.log()


async def test_a_viewer_sees_no_buttons_and_five_wrong_passwords_lock_sign_in(estate: Estate) -> None:
    page = await new_page(estate, "vera")
    await page.goto(f"{estate.base}/console/sites/{SITE}")
    await expect(page.locator('[data-locker="A-01"]')).to_be_visible(timeout=LIVE_MS)
    assert await page.get_by_role("button", name="Open").count() == 0
    refused = await page.request.post(
        f"{estate.base}/console/sites/{SITE}/open", form={"locker": "A-01", "reason": "x"}
    )
    assert refused.status == 403

    stranger = await (await estate.browser.new_context()).new_page()
    for _ in range(5):
        await sign_in(stranger, estate.base, "olive", "not the password")
        await expect(stranger.get_by_role("alert")).to_be_visible()
    await expect(stranger.get_by_role("alert")).to_contain_text("locked after 5 wrong passwords")
    await sign_in(stranger, estate.base, "olive", PASSWORD)
    await expect(stranger.get_by_role("alert")).to_contain_text("try again in 15 minutes")
    await screenshots(stranger, "sign-in")
