"""`lockergw doctor`: check a site's configuration and surroundings, and say plainly how to fix each fault."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import Settings, read_secret
from gateway.mqtt.signing import MIN_KEY_BYTES
from gateway.storage import LOW_SPACE_BYTES, describe_storage_error, filesystem_problem, free_bytes


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
    for name, what in (
        ("site.key", "the uid-hash key"),
        ("credentials.db", "the card numbers"),
        ("journal.db", "the journal"),
    ):
        path = state_dir / name
        if not path.exists():
            continue
        file_mode = stat.S_IMODE(path.stat().st_mode)
        if file_mode & 0o077:
            yield Finding(False, str(path), f"{what} is readable by others (mode {file_mode:o})", f"chmod 0600 {path}")
        else:
            yield Finding(True, str(path), "present, mode 0600")
    yield from check_storage(state_dir)
    yield from check_journal(settings)


def check_storage(state_dir: Path) -> Iterator[Finding]:
    """Can the journal commit? A read-only or full file system stops every tap."""
    subject = f"storage {state_dir}"
    problem = filesystem_problem(state_dir)
    if problem is None:
        try:
            with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".doctor-") as probe:
                probe.write(b"x" * 4096)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            problem = describe_storage_error(exc, state_dir)
    if problem is not None:
        yield Finding(
            False,
            subject,
            f"cannot write: {problem}; the journal cannot commit, so every tap is refused",
            "free space or remount the file system read-write (df -h, mount); the gateway recovers by itself",
        )
        return
    free = free_bytes(state_dir)
    if free is not None and free < LOW_SPACE_BYTES:
        yield Finding(
            False,
            subject,
            f"only {free // 1024} KiB free: the journal will soon be unable to commit",
            "free space, or lower gateway.journal_max_mb",
        )
        return
    yield Finding(True, subject, "writable" + (f", {free // (1024 * 1024)} MiB free" if free is not None else ""))


def check_journal(settings: Settings) -> Iterator[Finding]:
    """The local journal's hash chain, recomputed (as `lockergw journal verify` does)."""
    from gateway.journal import DATABASE_FILE, Journal, JournalError

    state_dir = settings.gateway.state_dir
    if not (state_dir / DATABASE_FILE).exists():
        return
    subject = f"journal {state_dir / DATABASE_FILE}"
    try:
        with Journal.open(
            state_dir, site=settings.gateway.site, gateway=settings.gateway.id, boot_id="doctor"
        ) as journal:
            fault = journal.verify()
            last = journal.last_seq
    except (JournalError, OSError) as exc:
        yield Finding(False, subject, f"cannot be read: {exc}", "lockergw journal verify; restore from a backup")
        return
    if fault is not None:
        yield Finding(False, subject, f"chain broken: {fault}", "keep the file for investigation; see docs/security.md")
    else:
        yield Finding(True, subject, f"chain intact up to seq {last}")


def check_signing(settings: Settings) -> Iterator[Finding]:
    """Signed requests are the default (SPEC §7): a key of at least 32 bytes, unsigned requests refused."""
    mqtt = settings.mqtt
    fix = "lockergw keygen --out /etc/lockergw/requests.key, then hmac_key_file = that path in [mqtt]"
    if mqtt.allow_unsigned_requests:
        yield Finding(
            False,
            "mqtt.allow_unsigned_requests",
            "on: anyone who can publish on the broker can open lockers and issue credentials (demo only)",
            f"remove it; {fix}",
        )
    if not mqtt.url:
        return
    if not mqtt.hmac_key_file:
        if not mqtt.allow_unsigned_requests:
            yield Finding(False, "mqtt.hmac_key_file", "not set: every request but health_check is refused", fix)
        return
    path = Path(mqtt.hmac_key_file)
    if path.is_file() and os.access(path, os.R_OK):
        size = len(read_secret(mqtt.hmac_key_file).encode("utf-8"))
        if size < MIN_KEY_BYTES:
            yield Finding(False, "mqtt.hmac_key_file", f"{path} holds {size} bytes, fewer than {MIN_KEY_BYTES}", fix)
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            yield Finding(
                False, "mqtt.hmac_key_file", f"{path} is readable by others (mode {mode:o})", f"chmod 0600 {path}"
            )
            return
    yield from check_secret_file("mqtt.hmac_key_file", mqtt.hmac_key_file)


def check_osdp_keys(settings: Settings) -> Iterator[Finding]:
    """OSDP readers: a secure-channel key file (16 bytes as 32 hex characters, mode 0600), else card
    numbers cross the RS-485 wire in plain text."""
    for reader in settings.readers:
        if reader.driver != "osdp":
            continue
        subject = f"reader {reader.id} scbk_file"
        if not reader.scbk_file:
            yield Finding(
                False,
                subject,
                "not set: OSDP runs without a secure channel (card numbers in plain text on the wire)",
                "put a key into the reader in install mode and set scbk_file (docs/security.md, OSDP keys)",
            )
            continue
        path = Path(reader.scbk_file)
        if not path.is_file():
            yield Finding(False, subject, f"{path} does not exist", "create it (32 hex characters), mode 0600")
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        try:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != 16:
            yield Finding(False, subject, f"{path} does not hold 16 bytes as 32 hex characters", "write the key again")
        elif mode & 0o077:
            yield Finding(False, subject, f"{path} is readable by others (mode {mode:o})", f"chmod 0600 {path}")
        else:
            yield Finding(True, subject, f"{path}: 16 bytes, mode 0600")


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
    findings += check_signing(settings)
    findings += check_devices(settings)
    findings += check_osdp_keys(settings)
    if broker:
        findings += check_broker(settings)
    return findings
