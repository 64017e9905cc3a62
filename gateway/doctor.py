"""`lockergw doctor`: check a site's configuration and surroundings, and say plainly how to fix each fault."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import Settings, read_secret


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    subject: str
    message: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{mark} {self.subject}: {self.message}"
        return f"{text}\n     fix: {self.fix}" if self.fix and not self.ok else text


def check_state_dir(settings: Settings) -> Iterator[Finding]:
    state_dir = settings.gateway.state_dir
    subject = f"state_dir {state_dir}"
    if not state_dir.exists():
        parent = next((p for p in state_dir.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            yield Finding(True, subject, "does not exist yet; the gateway creates it at first start")
        else:
            yield Finding(
                False,
                subject,
                f"does not exist and {parent} is not writable",
                f"create it for the service user: sudo install -d -m 0700 -o lockergw {state_dir}",
            )
        return
    if not os.access(state_dir, os.W_OK | os.X_OK):
        yield Finding(False, subject, "not writable by this user", f"sudo chown -R lockergw {state_dir}")
        return
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o007:
        yield Finding(False, subject, f"is readable by other users (mode {mode:o})", f"chmod 0700 {state_dir}")
    else:
        yield Finding(True, subject, "writable")
    key = state_dir / "site.key"
    if key.exists():
        key_mode = stat.S_IMODE(key.stat().st_mode)
        if key_mode & 0o077:
            yield Finding(
                False, str(key), f"the uid-hash key is readable by others (mode {key_mode:o})", f"chmod 0600 {key}"
            )
        else:
            yield Finding(True, str(key), "present, mode 0600")


def check_port(subject: str, port: str) -> Finding:
    if port.startswith(("udp:", "usb", "tty:", "com:")):
        return Finding(True, subject, f"{port} is an nfcpy path (checked when the reader starts)")
    path = Path(port)
    if not path.exists():
        return Finding(
            False,
            subject,
            f"{port} does not exist",
            "check the cable and the path (ls -l /dev/serial/by-id/); for the simulators run lockergw sim",
        )
    real = path.resolve()
    if not stat.S_ISCHR(real.stat().st_mode):
        return Finding(False, subject, f"{port} is not a character device", "point port = at the serial device")
    if not os.access(real, os.R_OK | os.W_OK):
        return Finding(
            False,
            subject,
            f"{port} is not readable and writable by this user",
            "add the service user to the dialout group: sudo usermod -aG dialout lockergw",
        )
    return Finding(True, subject, f"{port} present and accessible")


def check_devices(settings: Settings) -> Iterator[Finding]:
    for reader in settings.readers:
        yield check_port(f"reader {reader.id}", reader.port)
    seen: set[str] = set()
    for board in settings.boards:
        if board.port not in seen:
            seen.add(board.port)
            yield check_port(f"board {board.id}", board.port)


def check_secret_file(subject: str, path: str) -> Iterator[Finding]:
    if not path:
        return
    file = Path(path)
    if not file.is_file():
        yield Finding(False, subject, f"{path} does not exist", "create it, or leave the key empty")
        return
    if not os.access(file, os.R_OK):
        yield Finding(
            False, subject, f"{path} is not readable by this user", f"chgrp lockergw {path}; chmod 0640 {path}"
        )
        return
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o004:
        yield Finding(False, subject, f"{path} is readable by every user (mode {mode:o})", f"chmod 0640 {path}")
    else:
        yield Finding(True, subject, f"{path} readable, not world-readable")


def check_broker(settings: Settings, timeout_s: float = 5.0) -> Iterator[Finding]:
    mqtt = settings.mqtt
    if not mqtt.url:
        yield Finding(True, "mqtt", "no broker configured: events stay in the journal")
        return
    yield from check_secret_file("mqtt.password_file", mqtt.password_file)
    yield from check_secret_file("mqtt.hmac_key_file", mqtt.hmac_key_file)
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(mqtt, name)
        if value and not Path(value).is_file():
            yield Finding(False, f"mqtt.{name}", f"{value} does not exist", "fix the path or leave it empty")
            return
    url = urlsplit(mqtt.url)
    tls = url.scheme == "mqtts"
    host, port = url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883)
    try:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lockergw-doctor-{os.getpid()}")
        if mqtt.username:
            client.username_pw_set(mqtt.username, read_secret(mqtt.password_file) if mqtt.password_file else None)
        if tls:
            context = ssl.create_default_context(cafile=mqtt.ca_file or None)
            if mqtt.cert_file:
                context.load_cert_chain(mqtt.cert_file, mqtt.key_file or None)
            client.tls_set_context(context)
        result: dict[str, str] = {}

        def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object = None) -> None:
            result["reason"] = str(reason)

        client.on_connect = on_connect
        client.connect(host, port, keepalive=10)
        deadline = timeout_s
        while "reason" not in result and deadline > 0:
            client.loop(timeout=0.2)
            deadline -= 0.2
        client.disconnect()
    except (OSError, ssl.SSLError) as exc:
        yield Finding(
            False,
            f"broker {host}:{port}",
            f"cannot connect: {exc}",
            "check mqtt.url, the network and the broker's listener (and TLS files for mqtts://)",
        )
        return
    reason = result.get("reason")
    if reason is None:
        yield Finding(False, f"broker {host}:{port}", "no answer to CONNECT", "is this an MQTT port?")
    elif reason != "Success":
        yield Finding(
            False,
            f"broker {host}:{port}",
            f"refused the connection: {reason}",
            "check mqtt.username / password_file and the broker's ACL",
        )
    else:
        yield Finding(True, f"broker {host}:{port}", "connected" + (" over TLS" if tls else ""))


def run_checks(settings: Settings, broker: bool = True) -> list[Finding]:
    findings = [Finding(True, "configuration", "valid")]
    findings += check_state_dir(settings)
    findings += check_devices(settings)
    if broker:
        findings += check_broker(settings)
    return findings
