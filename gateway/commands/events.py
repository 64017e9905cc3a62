"""`lockergw events tail`: a small reference consumer of the event stream (docs/integrators.md).

Subscribes to `{prefix}/+/+/events/#` (or one site or gateway), prints one line per event in seq
order, de-duplicates by event_id, checks every hash and link of each gateway's chain, and asks the
gateway for `events/replay` when it sees a gap. `--count`/`--timeout` end it for scripts.

Exit status: 0; 1 when a hash or link did not check out, a gap was never filled or `--count` was not
reached before `--timeout`; 2 for a usage or connection problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any, TextIO

import aiomqtt

from gateway.commands.common import fail, load_or_report, printable
from gateway.config import MqttSection
from gateway.mqtt.consumer import Delivered, Duplicate, EventFollower, Fault, Gap
from gateway.mqtt.link import LinkError, make_client

RECONNECT_CAP_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("events", help="follow the gateways' event stream over MQTT")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    tail = verbs.add_parser(
        "tail",
        help="print events as they arrive, checking order, duplicates and the hash chain",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    tail.add_argument("--mqtt", metavar="URL", help="broker URL (mqtt:// or mqtts://); default: from --config")
    tail.add_argument("--config", metavar="FILE", help="take broker settings (and TLS files, login) from gateway.toml")
    tail.add_argument("--site", help="only this site")
    tail.add_argument("--gateway", help="only this gateway (with --site)")
    tail.add_argument("--prefix", help="topic prefix (default: from --config, else 'lockers')")
    tail.add_argument("--username", help="broker username")
    tail.add_argument("--password-file", metavar="FILE", help="file holding the broker password")
    tail.add_argument("--ca-file", metavar="FILE", help="CA certificate for mqtts://")
    tail.add_argument("--from-seq", type=int, metavar="N", help="ask each gateway to replay from seq N first")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N events")
    tail.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON line")
    tail.add_argument("--no-replay", action="store_true", help="report gaps without asking for a replay")
    tail.set_defaults(handler=handle_tail)


def _section(args: argparse.Namespace) -> MqttSection | None:
    base = MqttSection()
    if args.config:
        settings = load_or_report(args.config)
        if settings is None:
            return None
        base = settings.mqtt
    changes: dict[str, Any] = {}
    if args.mqtt:
        changes["url"] = args.mqtt
    for option, key in (("username", "username"), ("password_file", "password_file"), ("ca_file", "ca_file")):
        if getattr(args, option):
            changes[key] = getattr(args, option)
    if args.prefix:
        changes["topic_prefix"] = args.prefix
    return base.model_copy(update=changes)


def handle_tail(args: argparse.Namespace) -> int:
    if args.gateway and not args.site:
        return fail("events tail: --gateway needs --site")
    if not args.mqtt and not args.config:
        return fail("events tail: give --mqtt URL or --config FILE")
    section = _section(args)
    if section is None:
        return 2
    if not section.url:
        return fail("events tail: no broker URL (mqtt.url is empty); give --mqtt URL")
    tail = Tail(section, args, sys.stdout)
    try:
        return asyncio.run(tail.run())
    except LinkError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


class Tail:
    def __init__(self, section: MqttSection, args: argparse.Namespace, out: TextIO) -> None:
        self.section = section
        self.prefix = section.topic_prefix
        site, gateway = args.site or "+", args.gateway or "+"
        self.filter = f"{self.prefix}/{site}/{gateway}/events/#"
        self.from_seq: int | None = args.from_seq
        self.count: int | None = args.count
        self.timeout: float | None = args.timeout
        self.as_json: bool = args.json
        self.replay: bool = not args.no_replay
        self.out = out
        self.follower = EventFollower(start_seq=args.from_seq)
        self.delivered = 0
        self.duplicates = 0
        self.faults = 0
        self.open_gaps: set[tuple[str, str]] = set()
        self.identifier = f"lockergw-tail-{secrets.token_hex(4)}"

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self) -> int:
        try:
            async with asyncio.timeout(self.timeout):
                await self._follow()
        except TimeoutError:
            if self.count is not None and self.delivered < self.count:
                self.say(f"timeout: {self.delivered} of {self.count} events after {self.timeout:g} s")
                return 1
        except aiomqtt.MqttError as exc:
            return fail(f"events tail: broker {self.section.url}: {exc}")
        if self.duplicates:
            self.say(f"({self.duplicates} duplicate deliveries ignored)")
        return 1 if self.faults or self.open_gaps else 0

    async def _follow(self) -> None:
        delay = 0.25
        connected_once = False
        while True:
            client = make_client(self.section, identifier=self.identifier)
            try:
                async with client:
                    connected_once = True
                    delay = 0.25
                    await client.subscribe(self.filter, qos=1)
                    print(f"following {self.filter} on {self.section.url}", file=sys.stderr, flush=True)
                    if self.from_seq is not None and "+" not in self.filter.split("/events/")[0]:
                        await self._ask_replay(client, self.filter.split("/events/")[0], self.from_seq)
                    async for message in client.messages:
                        if await self._on_message(client, message) == "done":
                            return
            except aiomqtt.MqttError as exc:
                if not connected_once:
                    raise
                self.say(f"broker connection lost ({exc}); reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP_S)

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> str | None:
        try:
            envelope = json.loads(message.payload if isinstance(message.payload, bytes | str) else b"")
        except ValueError:
            self.say(f"not JSON on {message.topic}; ignored")
            return None
        if not isinstance(envelope, dict):
            return None
        for outcome in self.follower.receive(envelope, str(message.topic)):
            if isinstance(outcome, Duplicate):
                self.duplicates += 1
            elif isinstance(outcome, Gap):
                self.open_gaps.add((outcome.site, outcome.gateway))
                base = f"{self.prefix}/{outcome.site}/{outcome.gateway}"
                action = "asking for a replay" if self.replay else "not asking for a replay (--no-replay)"
                self.say(f"gap: {base} seq {outcome.first}-{outcome.last} missing; {action}")
                if self.replay:
                    await self._ask_replay(client, base, outcome.first)
            elif isinstance(outcome, Fault):
                self.faults += 1
                self.say(printable(f"FAULT {outcome.site}/{outcome.gateway}: {outcome.message}"))
            elif isinstance(outcome, Delivered) and (self.count is None or self.delivered < self.count):
                self._print(outcome)
        self.open_gaps = {key for key in self.open_gaps if self.follower.held(*key)}
        if self.count is not None and self.delivered >= self.count:
            return "done"
        return None

    def _print(self, outcome: Delivered) -> None:
        self.delivered += 1
        envelope = outcome.envelope
        if outcome.fault:
            self.faults += 1
        if self.as_json:
            self.say(json.dumps(envelope, ensure_ascii=False, sort_keys=True))
        else:
            self.say(describe(envelope, outcome.fault))

    async def _ask_replay(self, client: aiomqtt.Client, base: str, from_seq: int) -> None:
        request = {"transaction": f"{self.identifier}-{time.monotonic_ns()}", "from_seq": from_seq}
        await client.publish(f"{base}/request/events/replay", json.dumps(request).encode(), qos=1)


def describe(envelope: dict[str, Any], fault: str | None = None) -> str:
    """One line per event: time, gateway, seq, kind and what it is about (never a uid)."""
    parts = [
        str(envelope.get("ts", "?")),
        f"{envelope.get('site')}/{envelope.get('gateway')}",
        f"#{envelope.get('seq')}",
        str(envelope.get("kind")),
    ]
    for key in ("reader", "board", "locker", "reason", "unlock"):
        if envelope.get(key) not in (None, ""):
            parts.append(f"{key}={envelope[key]}")
    credential = envelope.get("credential")
    if isinstance(credential, dict) and credential.get("id"):
        parts.append(f"credential={credential['id']} holder={credential.get('holder')}")
    if envelope.get("override"):
        parts.append("override")
    if envelope.get("historical"):
        parts.append("(historical)")
    if fault:
        parts.append(f"CHAIN FAULT: {fault}")
    return printable(" ".join(parts))  # text from the broker never acts on the terminal
