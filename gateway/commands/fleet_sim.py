"""`lockergw fleet-sim`: an estate of simulated gateways on a broker, for central's tests, benchmark and demos."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import TYPE_CHECKING

import aiomqtt
from pydantic import ValidationError

from gateway.commands.common import fail
from gateway.config import MqttSection
from gateway.mqtt import link
from gateway.mqtt.link import LinkError

if TYPE_CHECKING:
    from simulators.fleet_faults import Faults


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet-sim",
        help="publish the MQTT contract of N simulated gateways (for central)",
        description=(
            "Simulate N gateways (gw-001… over sites site-1…) publishing state, info, lockers and chained events "
            "with plausible taps and doors; inject delivery faults; answer events/replay and credential requests. "
            "Stops after --events or --duration, or on Ctrl-C / SIGTERM, and prints one summary line. "
            "See docs/simulators.md."
        ),
    )
    parser.add_argument("--gateways", type=int, required=True, metavar="N", help="how many gateways")
    parser.add_argument(
        "--rate", type=float, required=True, metavar="EVENTS_PER_S", help="events per second, whole fleet"
    )
    parser.add_argument("--mqtt", required=True, metavar="URL", help="broker, mqtt://host[:port]")
    parser.add_argument(
        "--sites", type=int, default=1, metavar="S", help="sites the gateways are spread over (default 1)"
    )
    parser.add_argument(
        "--faults",
        default="",
        metavar="LIST",
        help="delivery faults as rates, e.g. drop=0.01,dup=0.01,reorder=0.05,tamper=0 (default none)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed: the same faults at the same seqs"
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--events", type=int, default=None, metavar="TOTAL", help="stop after this many events")
    stop.add_argument("--duration", type=float, default=None, metavar="S", help="stop after this many seconds")
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="S",
        help="after the last event, keep answering requests (replays) this long before stopping (default 0)",
    )
    parser.add_argument(
        "--hmac-key-file",
        default="",
        metavar="FILE",
        help="verify signed requests with this key (at least 32 bytes), as the gateways would; "
        "without it unsigned requests are accepted",
    )
    parser.add_argument("--no-replay", action="store_true", help="ignore events/replay requests (never answer them)")
    parser.add_argument(
        "--no-wills",
        action="store_true",
        help="no connection of its own per gateway: one connection in all, but no will saying offline if killed",
    )
    parser.add_argument("--prefix", default="lockers", metavar="PREFIX", help="topic prefix (default lockers)")
    broker = parser.add_argument_group("broker login and TLS (as the gateway's [mqtt] keys)")
    broker.add_argument("--username", default="", metavar="NAME")
    broker.add_argument("--password-file", default="", metavar="FILE")
    broker.add_argument(
        "--ca-file", default="", metavar="FILE", help="CA to verify an mqtts:// broker (default: system)"
    )
    broker.add_argument("--cert-file", default="", metavar="FILE", help="client certificate")
    broker.add_argument("--key-file", default="", metavar="FILE", help="its private key")
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> str | None:
    """The first fault of the command line's values, as one line; None if they are usable."""
    if args.gateways < 1:
        return "--gateways: must be at least 1"
    if not 1 <= args.sites <= args.gateways:
        return f"--sites: must be between 1 and --gateways ({args.gateways})"
    if not args.rate > 0 or args.rate == float("inf"):
        return "--rate: must be a number of events per second above 0"
    if args.events is not None and args.events < 0:
        return "--events: must be 0 or more"
    if args.duration is not None and not args.duration >= 0:
        return "--duration: must be 0 or more seconds"
    if not args.linger >= 0:
        return "--linger: must be 0 or more seconds"
    try:
        MqttSection(topic_prefix=args.prefix)
    except ValidationError:
        return f"--prefix: {args.prefix!r} is not a topic prefix (no spaces, no + or #)"
    try:
        link.check(broker_section(args))
    except LinkError as exc:
        message = str(exc).replace("mqtt.url:", "--mqtt:").replace("mqtt.password_file:", "--password-file:")
        message = message.replace("mqtt.hmac_key_file:", "--hmac-key-file:")
        return message.replace("mqtt: cannot load TLS files:", "--ca-file/--cert-file/--key-file: cannot load:")
    return None


def broker_section(args: argparse.Namespace) -> MqttSection:
    """The command line's broker options as the gateway's [mqtt] section."""
    return MqttSection.model_construct(
        url=args.mqtt,
        username=args.username,
        password_file=args.password_file,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        hmac_key_file=args.hmac_key_file,
    )


def run(args: argparse.Namespace) -> int:
    from simulators.fleet import FleetError
    from simulators.fleet_faults import Faults, FaultsError

    problem = _check(args)
    if problem is not None:
        return fail(f"fleet-sim: {problem}")
    try:
        faults = Faults.parse(args.faults)
    except FaultsError as exc:
        return fail(f"fleet-sim: {exc}")
    key = link.signing_key(broker_section(args))  # readable and long enough: checked above
    try:
        return asyncio.run(_simulate(args, faults, key))
    except FleetError as exc:
        return fail(f"fleet-sim: {exc}")
    except aiomqtt.MqttError as exc:
        print(f"lockergw: fleet-sim: lost the broker at {args.mqtt}: {exc}", file=sys.stderr)
        return 1


async def _simulate(args: argparse.Namespace, faults: Faults, key: bytes | None) -> int:
    from simulators.fleet import Fleet

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        fleet = Fleet(
            args.mqtt,
            gateways=args.gateways,
            sites=args.sites,
            faults=faults,
            seed=args.seed,
            prefix=args.prefix,
            hmac_key=key,
            replay=not args.no_replay,
            wills=not args.no_wills,
            username=args.username,
            password_file=args.password_file,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
        async with fleet:
            until = time.monotonic() + args.duration if args.duration is not None else None
            count = args.events if args.events is not None else sys.maxsize
            await fleet.publish(count, rate=args.rate, stop=stop, until=until)
            await fleet.flush()
            if args.linger and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.linger)
        print(fleet.summary(), flush=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
