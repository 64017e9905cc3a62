"""From `[mqtt]` settings to a connected aiomqtt client: URL, TLS files, password file, will.

A fresh client is made for every connection attempt, so nothing from a broken session (paho's
in-flight queue) leaks into the next one; the journal, not the client, is what gets re-sent.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiomqtt

from gateway.config import MqttSection, read_secret
from gateway.mqtt.signing import MIN_KEY_BYTES

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
CONNECT_TIMEOUT_S = 3.0


class LinkError(ValueError):
    """The [mqtt] settings cannot describe a connection (bad URL, unreadable secret file)."""


class BrokerSecrets(Protocol):
    """The [mqtt] keys `password` and `tls_context` read: the gateway's and central's sections both have them."""

    @property
    def password_file(self) -> str: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def cert_file(self) -> str: ...
    @property
    def key_file(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]` (default ports 1883 and 8883)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LinkError(f"mqtt.url: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise LinkError(f"mqtt.url: must start with mqtt:// or mqtts:// (got {url!r})")
    if not parts.hostname:
        raise LinkError(f"mqtt.url: no host in {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise LinkError(
            f"mqtt.url: only scheme, host and port belong here (got {url!r}); use username and password_file"
        )
    return BrokerAddress(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


def password(section: BrokerSecrets) -> str | None:
    if not section.password_file:
        return None
    try:
        return read_secret(section.password_file)
    except OSError as exc:
        raise LinkError(f"mqtt.password_file: cannot read {section.password_file}: {exc.strerror}") from None


def tls_context(section: BrokerSecrets) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (else the system store); present `cert_file`/`key_file` if set."""
    try:
        context = ssl.create_default_context(cafile=section.ca_file or None)
        if section.cert_file:
            context.load_cert_chain(section.cert_file, section.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise LinkError(f"mqtt: cannot load TLS files: {exc}") from None
    return context


def make_client(
    section: MqttSection,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    max_inflight: int = 20,
    timeout: float = 10.0,
) -> aiomqtt.Client:
    """An unconnected MQTT 5 client for these settings (enter it with `async with`)."""
    address = parse_url(section.url)
    client = aiomqtt.Client(
        address.host,
        address.port,
        username=section.username or None,
        password=password(section),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=section.keepalive,
        timeout=timeout,
        max_inflight_messages=max_inflight,
        tls_context=tls_context(section) if address.tls else None,
    )
    # aiomqtt warns above 10 outstanding calls; a full in-flight window is normal here.
    client.pending_calls_threshold = (max_inflight or 1000) + 100  # 0: no limit in paho; mqtt.inflight ≤ 1000
    # The TCP connect runs in an executor thread that cannot be cancelled; keep it short so that a
    # gateway stopping while the broker is unreachable still exits promptly (paho's default is 5 s).
    client._client.connect_timeout = CONNECT_TIMEOUT_S
    return client


def signing_key(section: MqttSection) -> bytes | None:
    """The request-signing key (the file's content without surrounding whitespace, as UTF-8 bytes),
    or None when no `hmac_key_file` is set. A key shorter than MIN_KEY_BYTES is refused."""
    path = section.hmac_key_file
    if not path:
        return None
    try:
        key = read_secret(path).encode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LinkError(f"mqtt.hmac_key_file: cannot read {path}: {reason}") from None
    if len(key) < MIN_KEY_BYTES:
        raise LinkError(
            f"mqtt.hmac_key_file: {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}; "
            "make a new key with: lockergw keygen --out FILE"
        )
    return key


def check(section: MqttSection) -> None:
    """Raise LinkError now if these settings could never connect (bad URL, unreadable secrets or TLS
    files) or could not check requests (a missing or short signing key)."""
    address = parse_url(section.url)
    password(section)
    signing_key(section)
    if address.tls:
        tls_context(section)
