"""Configuration: one TOML file plus `LOCKERGW_<SECTION>__<KEY>` environment overrides (SPEC §3).

`load_config(path)` returns a validated `Settings` or raises `ConfigError`, whose `faults` are one line
each, naming the file and the key path — the CLI prints them and exits 2, never a traceback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.settings_file import ConfigError as ConfigError
from gateway.settings_file import load_settings

DEFAULT_CONFIG_PATH = Path("/etc/lockergw/gateway.toml")
SLUG_PATTERN = r"^[a-z0-9-]+$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

READER_DRIVERS = ("rdm6300", "serial-ascii", "pn532", "osdp")
BOARD_DRIVERS = ("kerong-cu16", "kerong-cu48")
#: Readers whose buzzer/LED line is driven by writing to their serial port.
SERIAL_FEEDBACK_DRIVERS = ("rdm6300", "serial-ascii")
LOCKS_PER_BOARD = {"kerong-cu16": 16, "kerong-cu48": 48}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(Section):
    id: str = Field(pattern=SLUG_PATTERN)
    site: str = Field(pattern=SLUG_PATTERN)
    state_dir: Path = Path("/var/lib/lockergw")
    timezone: str | None = None
    journal_retention_days: int = Field(default=30, ge=1)
    journal_max_mb: int = Field(default=512, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'Europe/London')") from None
        return value

    def zone(self) -> ZoneInfo:
        """The zone schedules and validity dates are read in; the system zone when unset."""
        if self.timezone:
            return ZoneInfo(self.timezone)
        return system_zone()


def system_zone() -> ZoneInfo:
    try:
        link = Path("/etc/localtime").resolve()
        name = str(link).split("zoneinfo/", 1)[1]
        return ZoneInfo(name)
    except (IndexError, OSError, ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


class MqttSection(Section):
    url: str = ""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    topic_prefix: str = Field(default="lockers", pattern=r"^[^#+\s]+$")
    keepalive: int = Field(default=30, ge=5, le=3600)
    max_request_bytes: int = Field(default=4_194_304, ge=1024)
    hmac_key_file: str = ""
    #: Demo only: accept requests that carry no signature when no hmac_key_file is set (SPEC §7).
    allow_unsigned_requests: bool = False
    #: Events published and awaiting their PUBACK, at most. 100 is the knee of bench/bench_publish.py's
    #: sweep (docs/performance.md, Event delivery); the broker's Receive Maximum must allow it.
    inflight: int = Field(default=100, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if value and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {value!r}); empty means no broker")
        return value


class PolicySection(Section):
    lockout_after: int = Field(default=5, ge=1)
    lockout_window_s: float = Field(default=60, gt=0)
    lockout_s: float = Field(default=120, ge=0)
    emergency_two_person: bool = True
    two_person_window_s: float = Field(default=30, gt=0)
    door_left_open_s: float = Field(default=120, gt=0)
    keypad_window_s: float = Field(default=10, gt=0)
    forced_open_grace_s: float = Field(default=10, gt=0)


class ReaderFeedbackSection(Section):
    """Serial readers with a buzzer/LED line: the text written to the reader's port for each signal
    (TOML escapes such as "\\u0007" or "\\r" for control bytes; an empty string sends nothing)."""

    granted: str = ""
    denied: str = ""
    pending: str = ""
    locked_out: str = ""

    @field_validator("granted", "denied", "pending", "locked_out")
    @classmethod
    def _latin1(cls, value: str) -> str:
        if len(value) > 64 or any(ord(ch) > 0xFF for ch in value):
            raise ValueError("at most 64 bytes, each a character from \\u0000 to \\u00ff")
        return value


class ReaderSection(Section):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    driver: str
    port: str
    lockers: list[str] = Field(default_factory=list)
    repeat_gap_s: float = Field(default=0.5, ge=0)
    baudrate: int | None = None
    #: serial-ascii only: how lines are read. "auto" tells hex, decimal and Wiegand bit strings apart.
    #: "text" reads QR/barcode scanners: a line of digits is a visitor code, taken verbatim.
    format: Literal["auto", "hex", "decimal", "wiegand26", "wiegand34", "text"] = "auto"
    #: serial-ascii only: bit width a decimal number is padded to (24 = Wiegand-26 data bits).
    bit_width: int = Field(default=24, ge=8, le=128)
    #: osdp only: the PD address and an optional secure-channel key file (16 bytes, hex).
    osdp_address: int = Field(default=101, ge=0, le=126)
    scbk_file: str = ""
    #: rdm6300 and serial-ascii only: what to write to the port for each signal (see docs/visitors.md).
    feedback: ReaderFeedbackSection | None = None
    #: osdp only: send LED and buzzer commands after each decision (off when something else drives them).
    osdp_feedback: bool = True

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in READER_DRIVERS:
            raise ValueError(f"unknown driver {value!r} (one of: {', '.join(READER_DRIVERS)})")
        return value


class BoardSection(Section):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    driver: str
    port: str
    baudrate: int = 19200
    address: int = Field(default=0, ge=0, le=9)
    poll_ms: int = Field(default=250, ge=20, le=60_000)
    unlock_ms: int = Field(default=550, ge=10, le=60_000)
    latch_closed_bit: Literal[0, 1] = 1
    reply_timeout_ms: int = Field(default=150, ge=10, le=5000)
    #: The board replies to an unlock (some Kerong boards send a status reply): the bus then keeps
    #: quiet after each unlock to it, for `unlock_quiet_ms` (default: sized from the baud rate).
    answers_unlock: bool = False
    unlock_quiet_ms: int | None = Field(default=None, ge=0, le=1000)

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in BOARD_DRIVERS:
            raise ValueError(f"unknown driver {value!r} (one of: {', '.join(BOARD_DRIVERS)})")
        return value


class LockerSection(Section):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    board: str | None = None
    lock: int | None = Field(default=None, ge=1)
    section: str = ""
    department: str = ""
    mode: Literal["assigned", "shared"] = "assigned"


class MetricsSection(Section):
    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = "127.0.0.1"


class HomeAssistantSection(Section):
    """Home Assistant MQTT discovery (docs/visitors.md): lockers, doors and readers as entities."""

    discovery: bool = False
    prefix: str = Field(default="homeassistant", pattern=r"^[^#+/\s]+$")


class Settings(BaseSettings):
    """The whole configuration. Unknown keys are errors: a typo must not be silently ignored."""

    model_config = SettingsConfigDict(env_prefix="LOCKERGW_", env_nested_delimiter="__", extra="forbid", frozen=True)

    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    policy: PolicySection = PolicySection()
    metrics: MetricsSection = MetricsSection()
    homeassistant: HomeAssistantSection = HomeAssistantSection()
    readers: list[ReaderSection] = Field(default_factory=list)
    boards: list[BoardSection] = Field(default_factory=list)
    lockers: list[LockerSection] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (init kwargs carry the parsed TOML).
        return (env_settings, init_settings)

    def base_topic(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.gateway.site}/{self.gateway.id}"

    def lockers_of_reader(self, reader_id: str) -> tuple[str, ...]:
        for reader in self.readers:
            if reader.id == reader_id:
                return tuple(reader.lockers)
        return ()


def _items(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def cross_check(raw: dict[str, Any]) -> list[str]:
    """Relations between sections that single fields cannot check. Each fault is `path: message`.

    Works on the raw TOML so that these faults are reported together with field faults.
    """
    faults: list[str] = []
    for what in ("readers", "boards", "lockers"):
        for ident, count in Counter(item.get("id") for item in _items(raw, what)).items():
            if ident is not None and count > 1:
                faults.append(f"{what}: id {ident!r} is used {count} times")
    boards = {board.get("id"): board for board in _items(raw, "boards")}
    lockers = {locker.get("id") for locker in _items(raw, "lockers")}
    used_channels: dict[tuple[str, int], str] = {}
    for index, locker in enumerate(_items(raw, "lockers")):
        path = f"lockers[{index}]"
        board_id, lock = locker.get("board"), locker.get("lock")
        if board_id is None:
            if lock is not None:
                faults.append(f"{path}.lock: a keyed locker (no board) has no lock channel")
            continue
        board = boards.get(board_id)
        if board is None:
            faults.append(f"{path}.board: no board with id {board_id!r}")
            continue
        if lock is None:
            faults.append(f"{path}.lock: missing (the 1-based lock channel on board {board_id!r})")
            continue
        limit = LOCKS_PER_BOARD.get(str(board.get("driver")))
        if limit is not None and isinstance(lock, int) and lock > limit:
            faults.append(f"{path}.lock: {lock} is out of range for {board.get('driver')} (1-{limit})")
        if isinstance(lock, int):
            other = used_channels.setdefault((str(board_id), lock), str(locker.get("id")))
            if other != locker.get("id"):
                faults.append(f"{path}.lock: channel {lock} of board {board_id!r} is already used by {other!r}")
    for index, reader in enumerate(_items(raw, "readers")):
        if "feedback" in reader and reader.get("driver") not in SERIAL_FEEDBACK_DRIVERS:
            faults.append(
                f"readers[{index}].feedback: only {' and '.join(SERIAL_FEEDBACK_DRIVERS)} readers take a feedback "
                "line (OSDP readers get LED and buzzer commands: see osdp_feedback)"
            )
        served = reader.get("lockers", [])
        for position, locker_id in enumerate(served if isinstance(served, list) else []):
            if locker_id not in lockers:
                faults.append(f"readers[{index}].lockers[{position}]: no locker with id {locker_id!r}")
    by_port: dict[Any, dict[str, Any]] = {}
    for index, board in enumerate(_items(raw, "boards")):
        first = by_port.setdefault(board.get("port"), board)
        if first is board:
            continue
        if first.get("driver") != board.get("driver") or first.get("baudrate", 19200) != board.get("baudrate", 19200):
            faults.append(
                f"boards[{index}]: shares port {board.get('port')!r} with {first.get('id')!r} "
                "but not its driver and baudrate"
            )
        elif first.get("address", 0) == board.get("address", 0):
            faults.append(
                f"boards[{index}].address: {board.get('address', 0)} is already used on "
                f"{board.get('port')!r} by {first.get('id')!r}"
            )
    return faults


def load_config(path: Path | str) -> Settings:
    """Read, override from the environment and validate; raise ConfigError with one line per fault."""
    return load_settings(
        path, Settings, prefix="LOCKERGW_", example="config/gateway.example.toml", cross_check=cross_check
    )


def read_secret(path: str) -> str:
    """Read a secret from a file (password_file, hmac_key_file), stripped of surrounding whitespace."""
    return Path(path).read_text(encoding="utf-8").strip()
