"""The demo's estate view: when `mosquitto` is installed (and central's extra), `lockergw demo` also starts a
private broker, `lockergw central` on SQLite serving the console, and a few `lockergw fleet-sim` gateways,
and points the demo's own gateway at that broker — so the console shows the demo's bank live beside a
small estate. Everything lives in the demo's private directory and stops with the demo.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import Settings

DEMO_USER = "demo"
FLEET_GATEWAYS = 3
FLEET_SITES = 2
START_TIMEOUT_S = 30.0
CONSOLE_PORT = 8080


@dataclass(frozen=True, slots=True)
class EstateView:
    settings: Settings  # the demo gateway's, pointed at the private broker
    console: str
    user: str
    password: str


def missing() -> str | None:
    """Why the estate view cannot run here (one line saying how to get it), or None."""
    if shutil.which("mosquitto") is None:
        return (
            "install mosquitto (apt-get install mosquitto) to see the estate view: central's console beside this bank"
        )
    needed = ("sqlalchemy", "alembic", "fastapi", "uvicorn", "jinja2", "argon2")
    if any(importlib.util.find_spec(name) is None for name in needed):
        return "install central (pip install 'locker-gateway[central]') to see the estate view in central's console"
    return None


def _free_port(preferred: int = 0) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _wait(what: str, ready: object, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():  # type: ignore[operator]
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise RuntimeError(f"{what} did not start{': ' + tail[0] if tail else ''}")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
        return bool(answer.status == 200)
    return False


@contextlib.contextmanager
def estate_view(settings: Settings, root: Path) -> Iterator[EstateView]:
    """Start the broker, central (with a demo user) and the fleet; stop them all on leaving."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        key = root / "signing.key"
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
        broker_port = _free_port()
        conf = root / "mosquitto.conf"
        conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker_log = root / "mosquitto.log"
        processes.append(_start(["mosquitto", "-c", str(conf)], broker_log))
        _wait("mosquitto", lambda: _answers(broker_port), processes[-1], broker_log)
        broker = f"mqtt://127.0.0.1:{broker_port}"

        http_port = _free_port(CONSOLE_PORT)
        central_conf = root / "central.toml"
        central_conf.write_text(
            f'[central]\nid = "central-demo"\ndatabase = "sqlite:///{root / "central.db"}"\n'
            f'[mqtt]\nurl = "{broker}"\n[signing]\nhmac_key_file = "{key}"\n'
            f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        )
        password = _add_demo_user(central_conf)
        central_log = root / "central.log"
        processes.append(
            _start([sys.executable, "-m", "gateway.cli", "central", "--config", str(central_conf)], central_log)
        )
        console = f"http://127.0.0.1:{http_port}"
        _wait("central", lambda: _healthy(console), processes[-1], central_log)

        if importlib.util.find_spec("gateway.commands.fleet_sim") is not None:
            fleet = [sys.executable, "-m", "gateway.cli", "fleet-sim", "--gateways", str(FLEET_GATEWAYS), "--rate", "1",
                     "--sites", str(FLEET_SITES), "--mqtt", broker, "--hmac-key-file", str(key)]  # fmt: skip
            processes.append(_start(fleet, root / "fleet.log"))

        mqtt = settings.mqtt.model_copy(update={"url": broker, "hmac_key_file": str(key)})
        yield EstateView(settings.model_copy(update={"mqtt": mqtt}), f"{console}/console/", DEMO_USER, password)
    finally:
        for process in reversed(processes):
            _stop(process)


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _add_demo_user(config: Path) -> str:
    """The demo's operator sign-in, with a fresh random password (shown once, by the demo)."""
    from central.config import load_central_config
    from central.database import open_database
    from central.services import users
    from central.tokens import Role

    password = secrets.token_urlsafe(9)
    engine = open_database(load_central_config(config).central.database)
    try:
        with engine.begin() as connection:
            users.add(connection, DEMO_USER, Role.operator, password, actor="demo", now=datetime.now(UTC))
    finally:
        engine.dispose()
    return password
