"""`Fleet`: N simulated gateways speaking the §7 MQTT contract through one broker connection (SPEC §11).

    async with Fleet("mqtt://127.0.0.1:1883", gateways=100, sites=4, faults=Faults(drop=0.01)) as fleet:
        await fleet.publish(10_000, rate=2000)       # round-robin over the running gateways
        fleet.inject_gap(fleet.gateways[0])          # its next event is not published live
        await fleet.stop_gateway(fleet.gateways[1])  # gateway.stopped, then state offline
        await fleet.start_gateway(fleet.gateways[1]) # a new boot_id, state online, gateway.started
        await fleet.drain()                          # every publication acknowledged by the broker

Gateways are `gw-001…` spread over sites `site-1…`. Each has its retained `state` (online; its will,
held by a small connection of its own, says offline), `info` and `lockers/{id}`; its events are
chained as a real gateway's (see `simulators.fleet_gateway`) and published at QoS 1 through the one
fleet connection with at most `window` awaiting their PUBACK. Requests to any gateway arrive on that
connection and are answered by the gateway's own request handler; `events/replay` re-publishes the
journal from `from_seq` with `historical: true` (unless the fleet was made with `replay=False`).
Faults (`simulators.fleet_faults`) are drawn from a generator seeded with `seed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
from pydantic import ValidationError

from gateway.config import MqttSection
from gateway.events import canonical_json
from gateway.mqtt.link import LinkError, make_client
from gateway.mqtt.request_models import error_message
from gateway.mqtt.signing import RequestVerifier
from simulators.fleet_faults import Fault, Faults
from simulators.fleet_gateway import DEFAULT_KEEP, SimulatedGateway

log = logging.getLogger("lockergw.fleet")

#: Publications awaiting their PUBACK at most, across the whole fleet.
DEFAULT_WINDOW = 200
#: Envelopes re-published per step of a replay.
REPLAY_CHUNK = 500
#: How long saying goodbye (state offline, the last acknowledgements) may take when the fleet stops.
GOODBYE_TIMEOUT_S = 5.0
#: Open files needed besides one connection per gateway (the fleet's own connection, stores, the rest).
SPARE_FILES = 256


class FleetError(Exception):
    """Settings a fleet cannot run with (bad URL or prefix, no gateways); the message is one line."""


@dataclass(slots=True)
class FleetStats:
    """What the fleet did. `faulted[fault]` lists `(site, gateway, seq)` for every fault injected."""

    started: float = field(default_factory=time.monotonic)
    faulted: dict[Fault, list[tuple[str, str, int]]] = field(default_factory=lambda: {f: [] for f in Fault})
    replays: int = 0
    replayed_events: int = 0
    replays_ignored: int = 0
    requests: int = 0

    def faults(self) -> Counter[Fault]:
        return Counter({fault: len(seqs) for fault, seqs in self.faulted.items()})


def _room_for_connections(gateways: int) -> None:
    """Each gateway's will needs a connection, so a file descriptor, of its own: raise the soft limit on
    open files if it is too low for them (up to the hard limit), else say so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = gateways + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetError(
            f"{gateways} gateways with wills need {needed} open files, more than this process may have ({hard}); "
            "simulate fewer gateways or leave out the wills"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass(slots=True)
class _Replay:
    gateway: SimulatedGateway
    next_seq: int
    to_seq: int


class Fleet:
    def __init__(
        self,
        url: str,
        *,
        gateways: int = 3,
        sites: int = 1,
        faults: Faults | None = None,
        seed: int | None = None,
        prefix: str = "lockers",
        hmac_key: bytes | None = None,
        replay: bool = True,
        wills: bool = True,
        window: int = DEFAULT_WINDOW,
        keep: int = DEFAULT_KEEP,
        scratch: Path | None = None,
        username: str = "",
        password_file: str = "",
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
    ) -> None:
        """`hmac_key`: verify signed requests as a gateway with that `hmac_key_file` does (None: unsigned
        requests are accepted). `wills=False` leaves out each gateway's own connection (and its will).
        `scratch`: where the gateways' credential stores go (default: a temporary directory).
        `username` … `key_file`: as the gateway's [mqtt] keys of the same names (SPEC §3)."""
        if gateways < 1:
            raise FleetError("a fleet needs at least one gateway")
        if not 1 <= sites <= gateways:
            raise FleetError(f"sites must be between 1 and the number of gateways ({gateways})")
        if window < 1:
            raise FleetError("window must be at least 1")
        try:
            self._mqtt = MqttSection(
                url=url,
                topic_prefix=prefix,
                username=username,
                password_file=password_file,
                ca_file=ca_file,
                cert_file=cert_file,
                key_file=key_file,
            )
        except ValidationError as exc:
            raise FleetError(
                error_message(exc).replace("url:", "--mqtt:").replace("topic_prefix:", "--prefix:")
            ) from None
        self.url = url
        self.prefix = prefix
        self.faults = faults or Faults()
        self.replay_enabled = replay
        self.stats = FleetStats()
        self._rng = random.Random(seed)
        self._wills = wills
        self._window_size = window
        self._hmac_key = hmac_key
        self._keep = keep
        self._scratch_given = scratch
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._count = gateways
        self._sites = sites
        self.gateways: list[SimulatedGateway] = []
        self._by_base: dict[str, SimulatedGateway] = {}
        self._client: aiomqtt.Client | None = None
        self._presence: dict[SimulatedGateway, aiomqtt.Client] = {}
        self._window = asyncio.Semaphore(window)
        self._inflight: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._forced_drops: Counter[SimulatedGateway] = Counter()
        self._held: dict[SimulatedGateway, tuple[str, bytes, int]] = {}
        self._replays: list[_Replay] = []
        self._dirty: set[SimulatedGateway] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._turn = 0
        self._running_pool: list[SimulatedGateway] | None = None  # self.running, until one stops or starts

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Fleet:
        if self._wills:
            _room_for_connections(self._count)
        root = self._scratch_given
        if root is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="lockergw-fleet-")
            root = Path(self._scratch.name)
        for number in range(1, self._count + 1):
            site = f"site-{(number - 1) % self._sites + 1}"
            name = f"gw-{number:03d}"
            verifier = RequestVerifier(self._hmac_key) if self._hmac_key else None
            gateway = SimulatedGateway(
                site,
                name,
                prefix=self.prefix,
                rng=random.Random(self._rng.getrandbits(64)),
                state_dir=root / site / name,
                verifier=verifier,
                keep=self._keep,
            )
            gateway.on_change = self._changed
            self.gateways.append(gateway)
            self._by_base[gateway.topics.base] = gateway
        try:
            identifier = f"lockergw-fleet-sim-{self._rng.getrandbits(32):08x}"
            try:
                client = make_client(self._mqtt, identifier=identifier, max_inflight=self._window_size)
                await client.__aenter__()
            except LinkError as exc:
                raise FleetError(str(exc)) from None
            except aiomqtt.MqttError as exc:
                raise FleetError(f"cannot connect to the broker at {self.url}: {exc}") from None
            self._client = client
            await self._client.subscribe(f"{self.prefix}/+/+/request/#", qos=1)
            self._tasks = [
                asyncio.create_task(self._receive(), name="fleet requests"),
                asyncio.create_task(self._serve(), name="fleet replays and retained"),
            ]
            await asyncio.gather(*(self._come_online(gateway) for gateway in self.gateways))
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                for gateway in self.gateways:
                    if gateway.running:
                        await self._release_held(gateway)
                        await self._send(gateway.topics.state, canonical_json(gateway.state("offline")), retain=True)
                await self.drain()
        except (TimeoutError, aiomqtt.MqttError) as error:
            log.warning("fleet stopped without saying goodbye: %s", error or "timed out")
        finally:
            await self._close()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._inflight):
            task.cancel()
        for presence in list(self._presence.values()):
            with contextlib.suppress(aiomqtt.MqttError):
                await presence.__aexit__(None, None, None)
        self._presence.clear()
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            self._client = None
        for gateway in self.gateways:
            gateway.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    # ---- what tests, the benchmark and the command call --------------------------------------

    def gateway(self, site: str, name: str) -> SimulatedGateway:
        return self._by_base[f"{self.prefix}/{site}/{name}"]

    @property
    def running(self) -> list[SimulatedGateway]:
        return [gateway for gateway in self.gateways if gateway.running]

    @property
    def events(self) -> int:
        """Events journaled by every gateway so far (story, lifecycle and request events alike)."""
        return sum(gateway.seq for gateway in self.gateways)

    async def publish(
        self,
        count: int,
        *,
        rate: float | None = None,
        gateways: Iterable[SimulatedGateway] | None = None,
        stop: asyncio.Event | None = None,
        until: float | None = None,
    ) -> int:
        """Publish `count` events, round-robin over the running gateways (or over `gateways`), at most
        `rate` per second (as fast as the window allows when None); stop early when `stop` is set or the
        monotonic clock passes `until`. Returns how many were published."""
        chosen = list(gateways) if gateways is not None else None
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0
        while done < count:
            if (stop is not None and stop.is_set()) or (until is not None and time.monotonic() >= until):
                break
            if rate:
                ahead = start + done / rate - loop.time()
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
                    continue
            gateway = self._next_gateway(chosen)
            await self._emit(gateway, gateway.next_event())
            await self._publish_lockers(gateway)
            done += 1
            if done % 100 == 0:
                await asyncio.sleep(0)  # let acknowledgements and requests in
        return done

    def inject_gap(self, gateway: SimulatedGateway, count: int = 1) -> None:
        """The gateway's next `count` events are journaled but not published live (a drop)."""
        self._forced_drops[gateway] += count

    async def stop_gateway(self, gateway: SimulatedGateway) -> None:
        """Stop as a gateway does on SIGTERM: `gateway.stopped`, then state offline; it then publishes
        nothing and answers nothing until `start_gateway`."""
        if not gateway.running:
            return
        await self._emit(gateway, gateway.journal({"kind": "gateway.stopped", "reason": "stopped"}), faults=False)
        await self._release_held(gateway)
        await self._send(gateway.topics.state, canonical_json(gateway.state("offline")), retain=True)
        await self.drain()
        gateway.running = False
        self._running_pool = None
        presence = self._presence.pop(gateway, None)
        if presence is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await presence.__aexit__(None, None, None)

    async def start_gateway(self, gateway: SimulatedGateway) -> None:
        """Bring a stopped gateway back: a new boot_id, its retained topics, state online, `gateway.started`."""
        if gateway.running:
            return
        gateway.restart()
        gateway.running = True
        self._running_pool = None
        await self._come_online(gateway)
        await self._emit(gateway, gateway.journal({"kind": "gateway.started", "reason": None}), faults=False)

    async def drain(self) -> None:
        """Wait until the broker has acknowledged everything published so far (held reorders stay held)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    async def flush(self) -> None:
        """Publish every held-back (reordered) event, then `drain()`."""
        for gateway in list(self._held):
            await self._release_held(gateway)
        await self.drain()

    def summary(self) -> str:
        """One line: events per gateway, faults injected, replays answered."""
        per_gateway = [gateway.seq for gateway in self.gateways]
        low, high = min(per_gateway), max(per_gateway)
        spread = f"{low} per gateway" if low == high else f"{low}–{high} per gateway"
        faults = self.stats.faults()
        fault_text = ", ".join(f"{fault.value} {faults[fault]}" for fault in Fault)
        elapsed = time.monotonic() - self.stats.started
        replays = f"replays answered {self.stats.replays} ({self.stats.replayed_events} events re-published)"
        if self.stats.replays_ignored:
            replays += f", ignored {self.stats.replays_ignored}"
        return (
            f"fleet-sim: {sum(per_gateway)} events from {len(self.gateways)} gateways on {self._sites} "
            f"site{'s' if self._sites > 1 else ''} ({spread}) in {elapsed:.1f} s; faults: {fault_text}; {replays}"
        )

    # ---- publishing --------------------------------------------------------------------------

    async def _send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Hand one QoS 1 publication to the broker, keeping at most `window` awaiting their PUBACK."""
        if self._failure is not None:
            raise self._failure
        assert self._client is not None, "the fleet is not connected (use async with)"
        await self._window.acquire()
        task = asyncio.create_task(self._client.publish(topic, payload, qos=1, retain=retain))
        self._inflight.add(task)
        task.add_done_callback(self._acknowledged)

    def _acknowledged(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._window.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _emit(self, gateway: SimulatedGateway, envelope: dict[str, Any], *, faults: bool = True) -> None:
        """Publish one journaled event live, suffering the fault drawn for it."""
        topic = gateway.topics.event(str(envelope["kind"]))
        seq = int(envelope["seq"])
        fault = None
        if faults and self._forced_drops[gateway]:
            self._forced_drops[gateway] -= 1
            fault = Fault.DROP
        elif faults:
            fault = self.faults.draw(self._rng)
            if fault is Fault.REORDER and gateway in self._held:
                fault = None  # one held back at a time per gateway
        if fault is not None:
            self.stats.faulted[fault].append((gateway.site, gateway.gateway, seq))
        if fault is Fault.DROP:
            return
        live = {**envelope, "historical": False}
        if fault is Fault.REORDER:
            self._held[gateway] = (topic, canonical_json(live), seq)
            return
        if fault is Fault.TAMPER:
            live["reason"] = "tampered"  # not re-hashed: the hash no longer recomputes
        payload = canonical_json(live)
        await self._send(topic, payload)
        if fault is Fault.DUP:
            await self._send(topic, payload)
        held = self._held.get(gateway)
        if held is not None and held[2] < seq:
            await self._release_held(gateway)

    async def _release_held(self, gateway: SimulatedGateway) -> None:
        held = self._held.pop(gateway, None)
        if held is not None:
            await self._send(held[0], held[1])

    async def _publish_lockers(self, gateway: SimulatedGateway) -> None:
        changed = gateway.story.take_changed_lockers()
        if changed:
            states = gateway.locker_states()
            for locker in sorted(changed):
                await self._send(gateway.topics.locker(locker), canonical_json(states[locker]), retain=True)

    async def _come_online(self, gateway: SimulatedGateway) -> None:
        """The gateway's own connection (holding its will), then info, lockers and state online."""
        if self._wills:
            will = aiomqtt.Will(gateway.topics.state, canonical_json(gateway.state("offline")), qos=1, retain=True)
            presence = make_client(self._mqtt, identifier=f"lockergw-fleet-{gateway.site}-{gateway.gateway}", will=will)
            await presence.__aenter__()
            self._presence[gateway] = presence
        await self._send(gateway.topics.info, canonical_json(gateway.info()), retain=True)
        for locker, state in gateway.locker_states().items():
            await self._send(gateway.topics.locker(locker), canonical_json(state), retain=True)
        await self._send(gateway.topics.state, canonical_json(gateway.state("online")), retain=True)

    def _next_gateway(self, chosen: list[SimulatedGateway] | None) -> SimulatedGateway:
        if chosen is None:
            if self._running_pool is None:
                self._running_pool = self.running
            pool = self._running_pool
        else:
            pool = [gateway for gateway in chosen if gateway.running]
        if not pool:
            raise FleetError("no gateway of the fleet is running")
        self._turn += 1
        return pool[self._turn % len(pool)]

    # ---- requests, replays and retained updates ----------------------------------------------

    def _changed(self, gateway: SimulatedGateway, replay_from: int | None) -> None:
        if replay_from is not None:
            self._replays.append(_Replay(gateway, replay_from, gateway.seq))
        self._dirty.add(gateway)
        self._wake.set()

    async def _receive(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            topic = str(message.topic)
            gateway = self._by_base.get(topic.split("/request/", 1)[0])
            if gateway is None or not gateway.running:
                continue  # an offline gateway answers nothing
            if gateway.topics.command_of(topic) == "events/replay" and not self.replay_enabled:
                self.stats.replays_ignored += 1
                continue
            self.stats.requests += 1
            try:
                await gateway.requests().on_message(self._client, message)
            except aiomqtt.MqttError:
                raise
            except Exception as exc:
                log.error("request on %s failed: %s", topic, exc, exc_info=exc)

    async def _serve(self) -> None:
        """Events journaled by requests (remote opens…), replays and re-published `info`."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                gateway = self._dirty.pop()
                outbox, gateway.outbox = gateway.outbox, []
                for envelope in outbox:
                    await self._emit(gateway, envelope, faults=False)
                if gateway.info_dirty:
                    gateway.info_dirty = False
                    await self._send(gateway.topics.info, canonical_json(gateway.info()), retain=True)
                await self._publish_lockers(gateway)
            while self._replays:
                await self._replay_step(self._replays[0])

    async def _replay_step(self, replay: _Replay) -> None:
        envelopes = replay.gateway.read(replay.next_seq, min(replay.to_seq, replay.next_seq + REPLAY_CHUNK - 1))
        if not envelopes:
            self._replays.pop(0)
            self.stats.replays += 1
            return
        for envelope in envelopes:
            topic = replay.gateway.topics.event(str(envelope["kind"]))
            await self._send(topic, canonical_json({**envelope, "historical": True}))
        self.stats.replayed_events += len(envelopes)
        replay.next_seq = int(envelopes[-1]["seq"]) + 1
