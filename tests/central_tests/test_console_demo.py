"""`lockergw demo` with the estate view: a private broker, `lockergw central` serving the console and the
demo's own bank reporting to it; the printed address and sign-in work while the morning plays."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from central_tests.console_kit import hidden_token

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
pytestmark = [pytest.mark.timeout(150), pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs mosquitto")]


def test_the_demo_prints_a_console_address_and_sign_in_that_show_its_bank_live(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "demo.toml").read_text().replace("/tmp/lockergw-demo", str(tmp_path))
    config = tmp_path / "demo.toml"
    config.write_text(text)
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--config", str(config), "--plain", "--speed", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        found = re.match(r"console: (http://127\.0\.0\.1:\d+)/console/  sign in as (\S+) / (\S+)$", first.strip())
        assert found, first
        base, user, password = found.groups()
        with httpx.Client(base_url=base, timeout=10) as browser:
            form = browser.get("/console/signin")
            signed = browser.post("/console/signin", data={"name": user, "password": password,
                                                           "csrf_token": hidden_token(form.text)})  # fmt: skip
            assert signed.status_code in (200, 303)
            deadline = time.monotonic() + 60
            while 'data-locker="A-01"' not in (page := browser.get("/console/sites/demo-school").text):
                assert time.monotonic() < deadline, page[-2000:]
                time.sleep(0.5)
            while not all(site in (estate := browser.get("/console/").text) for site in ("demo-school", "site-1")):
                assert time.monotonic() < deadline, estate[-2000:]  # the demo's bank beside fleet-sim's estate
                time.sleep(0.5)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
    with pytest.raises(httpx.TransportError):  # central stopped with the demo
        httpx.get(f"{base}/healthz", timeout=2)
