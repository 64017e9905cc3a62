"""`central.toml`: one TOML file plus `LOCKERGW_CENTRAL_<SECTION>__<KEY>` environment overrides (SPEC §11).

`load_central_config(path)` returns validated `CentralSettings` or raises `ConfigError` (one line per fault).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.config import SLUG_PATTERN, read_secret
from gateway.settings_file import load_settings

DEFAULT_CENTRAL_CONFIG_PATH = Path("/etc/lockergw/central.toml")
ENV_PREFIX = "LOCKERGW_CENTRAL_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CentralSection(Section):
    id: str = Field(default="central-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    database: str = "sqlite:////var/lib/lockergw-central/central.db"
    gap_grace_s: float = Field(default=5, ge=0)
    repair_timeout_s: float = Field(default=120, gt=0)
    gateway_offline_s: float = Field(default=300, gt=0)
    batch_ms: int = Field(default=50, ge=1, le=10_000)
    takeover_s: float = Field(default=30, gt=0)
    session_expiry_s: int = Field(default=3600, ge=0)
    #: How many unacknowledged QoS 1 messages the broker may send this worker (MQTT 5 Receive Maximum).
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: The estate's time zone: a date-only `valid_from` / `valid_until` of a credential is read in it (SPEC §4).
    timezone: str = "UTC"
    #: How often credentials past `valid_until` and not returned are looked for (`key.overdue`; daily).
    overdue_check_s: float = Field(default=86_400, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/London)") from None
        return value

    @field_validator("database")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError(
                f"must start with sqlite:/// or postgresql:// (got {value.split('://')[0]!r}://…)"
                if "://" in value
                else "must be a database URL such as sqlite:////var/lib/lockergw-central/central.db"
            )
        return value


class CentralMqttSection(Section):
    """The broker connection; the same TLS and password keys as the gateway's [mqtt] (SPEC §3)."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive: int = Field(default=30, ge=5, le=3600)
    topic_prefix: str = Field(default="lockers", pattern=r"^[^#+\s$][^#+\s]*$")
    share_group: str = Field(default="lockergw-central", pattern=r"^[^#+/\s]+$")

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {value!r})")
        return value


class SiteKey(Section):
    site: str = Field(pattern=SLUG_PATTERN)
    hmac_key_file: str


class SigningSection(Section):
    """The keys central signs requests to gateways with: one for every gateway, or one per site."""

    hmac_key_file: str = ""
    sites: list[SiteKey] = Field(default_factory=list)

    def key_file_for(self, site: str) -> str:
        for entry in self.sites:
            if entry.site == site:
                return entry.hmac_key_file
        return self.hmac_key_file

    def key_for(self, site: str) -> bytes | None:
        """The signing key for `site`, or None when none is configured. Raises OSError if unreadable."""
        path = self.key_file_for(site)
        return read_secret(path).encode("utf-8") if path else None


class HttpSection(Section):
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):[0-9]{1,5}$")
    cert_file: str = ""
    key_file: str = ""

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class CentralSettings(BaseSettings):
    """The whole of central.toml. Unknown keys are errors."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    central: CentralSection = CentralSection()
    mqtt: CentralMqttSection = CentralMqttSection()
    signing: SigningSection = SigningSection()
    http: HttpSection = HttpSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def _cross_check(raw: dict[str, Any]) -> list[str]:
    faults: list[str] = []
    signing = raw.get("signing")
    sites = signing.get("sites", []) if isinstance(signing, dict) else []
    seen: set[str] = set()
    for index, entry in enumerate(sites if isinstance(sites, list) else []):
        site = entry.get("site") if isinstance(entry, dict) else None
        if site in seen:
            faults.append(f"signing.sites[{index}].site: {site!r} is listed twice")
        if isinstance(site, str):
            seen.add(site)
    return faults


def load_central_config(path: Path | str) -> CentralSettings:
    """Read, override from the environment and validate; raise ConfigError with one line per fault."""
    return load_settings(
        path, CentralSettings, prefix=ENV_PREFIX, example="config/central.example.toml", cross_check=_cross_check
    )
