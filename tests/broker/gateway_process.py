"""The MQTT side of a gateway in a process of its own, for tests that SIGKILL it.

    python tests/broker/gateway_process.py STATE_DIR URL GATEWAY_ID [--append N] [--inflight W]

Journals N events first (as a gateway with a backlog would have), starts `MqttService`, prints
`connected <boot_id>` once the broker session is up, then keeps running until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.kit import LockerBank, gateway_settings
from gateway.events import uuid7
from gateway.journal import Journal
from gateway.mqtt.service import MqttService
from gateway.sitekey import load_or_create_site_key
from gateway.store import Store


async def main(state_dir: Path, url: str, gateway: str, append: int, inflight: int) -> None:
    settings = gateway_settings(state_dir, url, gateway=gateway, inflight=inflight)
    boot_id = uuid7()
    site_key = load_or_create_site_key(state_dir)
    with (
        Store.open(state_dir) as store,
        Journal.open(state_dir, site=settings.gateway.site, gateway=gateway, boot_id=boot_id) as journal,
    ):
        bank = LockerBank(settings, journal, store, boot_id=boot_id)
        for start in range(0, append, 25):
            bank.append([{"kind": "door.opened", "locker": "A-01", "door": "open"}] * min(25, append - start))
        async with MqttService(settings, journal, store, bank, site_key) as mqtt:
            bank.notify = mqtt.notify
            mqtt.set_ready()
            await mqtt.publisher.wait_connected()
            print(f"connected {boot_id}", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("url")
    parser.add_argument("gateway")
    parser.add_argument("--append", type=int, default=0)
    parser.add_argument("--inflight", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.state_dir, args.url, args.gateway, args.append, args.inflight))
