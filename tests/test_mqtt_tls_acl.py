"""TLS with client certificates, a password per gateway and the documented ACL (docs/mosquitto/lockergw.acl)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from broker.kit import Capture, is_event, running_gateway
from broker.mosquitto import Mosquitto, TlsFiles

ACL = Path(__file__).parents[1] / "docs" / "mosquitto" / "lockergw.acl"
SITE = "north-school"
BASE = f"lockers/{SITE}/gw-01"
PASSWORDS = {
    "gw-01": "pw-gw-01",
    "gw-02": "pw-gw-02",
    "central": "pw-central",
    "consumer": "pw-consumer",
    "gw-07": "pw-gw-07",  # a login with a gateway-like name but no gateway block in the ACL
}


@pytest.fixture
def secure_broker(mosquitto_factory: Callable[..., Mosquitto], test_pki: TlsFiles) -> Mosquitto:
    return mosquitto_factory(
        tls=test_pki, passwords=PASSWORDS, acl=ACL.read_text(), require_certificate=True, debug_log=True
    )


def tls_options(tmp_path: Path, pki: TlsFiles, user: str, password: str) -> dict[str, str]:
    password_file = tmp_path / f"{user}.password"
    password_file.write_text(password + "\n")
    return {
        "username": user,
        "password_file": str(password_file),
        "ca_file": str(pki.ca_cert),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }


async def test_gateway_over_tls_with_password_and_acl(
    secure_broker: Mosquitto, test_pki: TlsFiles, tmp_path: Path
) -> None:
    url = secure_broker.url
    assert url.startswith("mqtts://")
    options = tls_options(tmp_path, test_pki, "gw-01", PASSWORDS["gw-01"])
    async with (
        running_gateway(tmp_path / "gw-01", url, site=SITE, **options) as rig,
        Capture(url, "lockers/#", username="central", password=PASSWORDS["central"], tls=test_pki) as central,
        Capture(url, username="gw-02", password=PASSWORDS["gw-02"], tls=test_pki) as intruder,
    ):
        online = await central.wait_for(lambda m: m.topic == f"{BASE}/state")
        assert online.json()["state"] == "online"
        rig.journal_events(1)
        await central.wait_for(is_event)
        assert (await central.request(BASE, "health_check", {}))["status"] == "ok"

        # Another gateway's identity: its request to gw-01 and its forged event are dropped by the broker.
        await intruder.publish(
            f"{BASE}/request/lockers/open",
            {"transaction": "intruder", "locker": "A-01", "operator": "x", "reason": "x"},
        )
        await intruder.publish(f"{BASE}/events/door.opened", {"forged": True})
        # Each publish above was acknowledged after the broker decided its fate, so anything let through
        # would reach the gateway (and central) before the messages below.
        rig.journal_events(1)
        after = await central.request(BASE, "health_check", {})
        assert after["status"] == "ok"
        await central.wait_count(is_event, 2)
        responses = [m.json() for m in central.on("/response/lockers/open")]
        assert responses == []
        assert all("forged" not in m.json() for m in central.messages if is_event(m))
        assert rig.bank.opened == []
        assert "Denied PUBLISH from capture" in secure_broker.log_text()


async def test_wrong_password_is_reported_and_never_connects(
    secure_broker: Mosquitto, test_pki: TlsFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lockergw.mqtt")
    options = tls_options(tmp_path, test_pki, "gw-01", "not the password")
    async with running_gateway(tmp_path / "gw-01", secure_broker.url, site=SITE, connect=False, **options) as rig:
        assert not await rig.service.publisher.wait_connected(1.0)
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "authori" in lines[0].lower()


async def test_a_gateway_cannot_use_another_gateways_base(
    secure_broker: Mosquitto, test_pki: TlsFiles, tmp_path: Path
) -> None:
    """gw-02 configured with gw-01's id but its own login: the broker refuses everything it publishes
    (MQTT 5 PUBACK 0x87), so nothing reaches central, and gw-02 keeps its events and says it is refused."""
    options = tls_options(tmp_path, test_pki, "gw-02", PASSWORDS["gw-02"])
    async with (
        Capture(
            secure_broker.url, "lockers/#", username="central", password=PASSWORDS["central"], tls=test_pki
        ) as central,
        running_gateway(tmp_path / "gw-02", secure_broker.url, site=SITE, gateway="gw-01", **options) as rig,
    ):
        rig.journal_events(3)
        async with asyncio.timeout(30):
            while rig.service.refusal is None:
                await asyncio.sleep(0.05)
        assert "Not authorized" in rig.service.refusal
        assert rig.journal.backlog() == 3  # refused events are never marked sent
        honest = tls_options(tmp_path, test_pki, "gw-01", PASSWORDS["gw-01"])
        async with running_gateway(tmp_path / "gw-01", secure_broker.url, site=SITE, **honest) as real:
            real.journal_events(1)
            await central.wait_for(is_event)
        assert len([m for m in central.messages if is_event(m)]) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password_file": "/nonexistent/pw"}, "mqtt.password_file: cannot read /nonexistent/pw"),
        ({"hmac_key_file": "/nonexistent/key"}, "mqtt.hmac_key_file: cannot read /nonexistent/key"),
        ({"url": "mqtts://127.0.0.1:8883", "ca_file": "/nonexistent/ca.crt"}, "mqtt: cannot load TLS files"),
        ({"url": "mqtt://:1883"}, "mqtt.url: no host"),
    ],
)
async def test_unusable_mqtt_settings_stop_start_up_with_one_line(
    options: dict[str, str], message: str, tmp_path: Path
) -> None:
    from gateway.mqtt.link import LinkError

    url = options.pop("url", "mqtt://127.0.0.1:1883")
    with pytest.raises(LinkError, match=message) as raised:
        async with running_gateway(tmp_path, url, connect=False, **options):
            pass
    assert "\n" not in str(raised.value)


async def test_the_read_only_consumer_and_central_never_see_requests_and_a_gateway_like_name_publishes_nothing(
    secure_broker: Mosquitto, test_pki: TlsFiles, tmp_path: Path
) -> None:
    url = secure_broker.url
    options = tls_options(tmp_path, test_pki, "gw-01", PASSWORDS["gw-01"])
    login = {"tls": test_pki}
    async with (
        running_gateway(tmp_path / "gw-01", url, site=SITE, **options) as rig,
        Capture(url, "lockers/#", username="consumer", password=PASSWORDS["consumer"], **login) as consumer,
        Capture(url, "lockers/#", username="central", password=PASSWORDS["central"], **login) as central,
        Capture(url, username="gw-07", password=PASSWORDS["gw-07"], **login) as lookalike,
    ):
        await consumer.wait_for(lambda m: m.topic == f"{BASE}/state")
        upsert = {"credentials": [{"id": "C-1", "uid": "3C00CE754C", "holder": "h", "role": "user"}]}
        assert (await central.request(BASE, "credentials/upsert", upsert))["status"] == "ok"
        await consumer.publish(f"{BASE}/request/lockers/open", {"locker": "A-01", "operator": "x", "reason": "x"})
        await lookalike.publish(f"lockers/{SITE}/gw-07/events/door.opened", {"forged": True})
        await lookalike.publish(f"lockers/{SITE}/gw-07/state", {"state": "online"}, retain=True)
        rig.journal_events(1)
        await consumer.wait_for(is_event)
        await central.wait_for(is_event)
        for capture in (consumer, central):
            assert not [m for m in capture.messages if "/request/" in m.topic], "a request payload was readable"
            assert not [m for m in capture.messages if "/gw-07/" in m.topic]
        assert not [m for m in consumer.messages if "/response/" in m.topic]
        assert rig.bank.opened == []
