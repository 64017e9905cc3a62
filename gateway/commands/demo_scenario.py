"""`lockergw demo`'s scenario: the gateway and the simulators together, acting out a school morning.

Everything is real but the hardware: the unmodified daemon (`gateway.daemon.Gateway`) opens the
simulated readers and boards through pseudo-terminals, decides, journals and unlocks; the scenario
only does what people would do — tap fobs, close doors, leave one open, force one, show a visitor
code's QR code at the reception reader. The readers' LEDs and beepers (what the gateway writes back to
them) are shown beside the lockers.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.commands.demo_view import DemoView, LockerTile, ReaderTile
from gateway.config import Settings
from gateway.daemon import Gateway
from gateway.store import Store
from gateway.visitors import grouped, new_code
from simulators.site import SimulatedSite

# Card numbers as the readers report them: 10 hex for the RDM6300 banks, 6 hex (Wiegand-26) at the door reader.
PEOPLE: list[dict[str, Any]] = [
    {"id": "C-1001", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-01"]},
    {"id": "C-1002", "uid": "14008EC793", "holder": "ben", "role": "user", "scope": ["A-02"]},
    {"id": "C-1003", "uid": "62E3086CED", "holder": "cara", "role": "user", "scope": ["A-03"]},
    {"id": "C-1004", "uid": "1A2B3C4D5E", "holder": "dev", "role": "user", "scope": ["A-04"], "status": "lost"},
    {"id": "C-1005", "uid": "0A0B0C0D0E", "holder": "ella", "role": "user", "scope": []},
    {"id": "C-1006", "uid": "0F0E0D0C0B", "holder": "finn", "role": "user", "scope": []},
    {"id": "S-0001", "uid": "5A0144", "holder": "ms-patel", "role": "section_master", "scope": ["A"]},
    {"id": "E-0001", "uid": "0C607C", "holder": "head", "role": "emergency", "scope": []},
    {"id": "E-0002", "uid": "1B2C3D", "holder": "deputy", "role": "site_master", "scope": []},
    {
        "id": "K-0001",
        "uid": "",
        "holder": "caretaker",
        "role": "user",
        "scope": ["K-01"],
        "kind": "physical_key",
        "key_code": "KX-204",
    },
]
STRANGER = "DEADBEEF01"
#: A presentation of the same code at the same reader needs this much silence first (repeat_gap_s).
NEW_PRESENTATION_S = 0.6


class FrontDesk:
    """Issues the demo's visitor code the way `lockergw credentials visitor` does, and waits until the
    running gateway has it in force (as the CLI's change would be within a second)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.code = new_code()
        self.id = "V-0001"

    async def issue(self, site: SimulatedSite) -> None:
        now = datetime.now(UTC)
        visitor = {
            "id": self.id,
            "uid": self.code,
            "holder": "dana-contractor",
            "role": "user",
            "kind": "mobile",
            "scope": ["A-06"],
            "valid_from": now.isoformat(),
            "valid_until": (now + timedelta(hours=4)).isoformat(),
            "single_use": True,
        }
        with Store.open(self.gateway.settings.gateway.state_dir) as store:
            store.upsert([visitor], by="front-desk", now=now)
        while self.id not in self.gateway.credentials.by_id:
            await asyncio.sleep(0.05)

    async def show_again(self, site: SimulatedSite) -> None:
        await asyncio.sleep(NEW_PRESENTATION_S)
        await site.tap("visitor-a", self.code)


@dataclass(frozen=True)
class Step:
    narration: str
    action: Callable[[SimulatedSite], Awaitable[Any]]
    pause_s: float = 2.0
    #: Wait (up to the configured time plus a margin) until the gateway journals this kind.
    await_kind: str | None = None


def scenario(desk: FrontDesk) -> list[Step]:
    async def hammer(site: SimulatedSite) -> None:
        for _ in range(6):
            await site.tap("bank-a", STRANGER, hold=0.2)
            await asyncio.sleep(0.8)

    async def guess(site: SimulatedSite) -> None:
        for _ in range(6):
            await site.tap("visitor-a", new_code(), hold=0.1)
            await asyncio.sleep(0.2)

    return [
        Step(
            "08:10 Amira taps her fob at corridor A: her locker A-01 pops open", lambda s: s.tap("bank-a", "3C00CE754C")
        ),
        Step("Amira takes her books and shuts the door", lambda s: s.close("A-01")),
        Step("Ben opens A-02 — and runs off to class leaving the door open", lambda s: s.tap("bank-a", "14008EC793")),
        Step(
            "Cara's lock is jammed: her tap is granted but the latch never opens",
            lambda s: _jammed_tap(s, "A-03", "bank-a", "62E3086CED"),
            3.0,
        ),
        Step(
            "Ella wants a day-use locker in corridor B: she gets the lowest free one",
            lambda s: s.tap("bank-b", "0A0B0C0D0E"),
        ),
        Step("Finn gets the next one", lambda s: s.tap("bank-b", "0F0E0D0C0B")),
        Step("Both put their kit in and close the doors", lambda s: _close_all(s, "B-01", "B-02")),
        Step("Ella comes back: the same tap reopens B-01 and releases it", lambda s: s.tap("bank-b", "0A0B0C0D0E")),
        Step("...and she closes it behind her", lambda s: s.close("B-01")),
        Step(
            "Somebody found Dev's lost fob and tries it: refused, and security is told",
            lambda s: s.tap("bank-a", "1A2B3C4D5E"),
        ),
        Step("A stranger's card is tried again and again: the reader locks itself out", hammer, 1.0),
        Step("Ms Patel (section A master) opens A-01 at its door reader", lambda s: s.tap("door-a-01", "5A0144")),
        Step("...and closes it again", lambda s: s.close("A-01")),
        Step(
            "Emergency: the head teacher taps first — the gateway waits for a second person",
            lambda s: s.tap("door-a-01", "0C607C"),
        ),
        Step("The deputy (site master) confirms: two-person emergency opening", lambda s: s.tap("door-a-01", "1B2C3D")),
        Step("The door is shut", lambda s: s.close("A-01")),
        Step(
            f"Reception issues Dana (contractor) a single-use code for A-06, 4 hours: {grouped(desk.code)}",
            desk.issue,
        ),
        Step(
            "Dana shows the code's QR on her phone at the visitor reader: A-06 opens, green and a beep",
            lambda s: s.tap("visitor-a", desk.code),
        ),
        Step("She leaves her tools and closes A-06", lambda s: s.close("A-06")),
        Step("She tries the code again: single-use, it is revoked now — red, two beeps", desk.show_again),
        Step("Someone tries to guess visitor codes: after 5 refusals the reader locks itself out", guess, 1.0),
        Step("Someone prises A-05 open without a tap", lambda s: s.open("A-05"), await_kind="door.forced_open"),
        Step("Ben's door is still open... the gateway raises door.left_open", _noop, 0.5, "door.left_open"),
        Step("Ben's door is finally closed, A-05 too", lambda s: _close_all(s, "A-02", "A-05")),
    ]


async def _noop(site: SimulatedSite) -> None:
    return None


async def _close_all(site: SimulatedSite, *lockers: str) -> None:
    for locker in lockers:
        await site.close(locker)


async def _jammed_tap(site: SimulatedSite, locker: str, reader: str, uid: str) -> None:
    await site.jam(locker)
    await site.tap(reader, uid)


def seed_credentials(settings: Settings) -> None:
    """A fresh store for each demo run: the scenario's people and keys."""
    state_dir = settings.gateway.state_dir
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, mode=0o700)
    now = datetime.now(UTC)
    with Store.open(state_dir) as store:
        store.upsert(
            [{**person, "valid_from": (now - timedelta(days=30)).isoformat()} for person in PEOPLE],
            by="demo",
            now=now,
        )


def tiles_for(settings: Settings) -> dict[str, LockerTile]:
    owners = {scope: p["holder"] for p in PEOPLE if p["role"] == "user" for scope in p["scope"]}
    return {
        locker.id: LockerTile(
            id=locker.id, mode="keyed" if locker.board is None else locker.mode, owner=owners.get(locker.id, "")
        )
        for locker in settings.lockers
    }


async def run_demo(
    settings: Settings,
    show: Callable[[DemoView], Awaitable[None]] | None,
    speed: float,
    printer: Callable[[str], None] | None = None,
) -> DemoView:
    """Run the scenario; `show` refreshes a live display, `printer` gets plain lines when there is none."""
    view = DemoView(tiles=tiles_for(settings), title=f"lockergw demo — {settings.gateway.site}")
    view.readers = {r.id: ReaderTile(r.id) for r in settings.readers if r.feedback is not None}
    seed_credentials(settings)
    gateway = Gateway(settings)
    view.door_of = gateway.doors.door
    desk = FrontDesk(gateway)

    def on_event(envelope: dict[str, Any]) -> None:
        line = view.apply(envelope)
        if printer is not None:
            printer(line.plain)

    gateway.listeners.append(on_event)
    journaled: set[str] = set()
    gateway.listeners.append(lambda envelope: journaled.add(envelope["kind"]))
    async with SimulatedSite(settings) as site:
        view.signals_of = lambda reader_id: (site.readers[reader_id].signal_count, site.readers[reader_id].signals)
        if printer is not None:
            view.on_signal = lambda reader_id, signal: printer(f"  reader {reader_id} shows: {signal}")
        runner = asyncio.create_task(gateway.run())
        story = asyncio.create_task(_tell(settings, site, gateway, desk, journaled, view, show, speed, printer))
        try:
            # Ctrl-C stops the gateway (its SIGINT handler): then the story stops too, at once.
            await asyncio.wait({runner, story}, return_when=asyncio.FIRST_COMPLETED)
            if story.done():
                story.result()
        finally:
            story.cancel()
            await asyncio.gather(story, return_exceptions=True)
            gateway.stop()
            await asyncio.wait_for(runner, timeout=10)
    return view


async def _tell(
    settings: Settings,
    site: SimulatedSite,
    gateway: Gateway,
    desk: FrontDesk,
    journaled: set[str],
    view: DemoView,
    show: Callable[[DemoView], Awaitable[None]] | None,
    speed: float,
    printer: Callable[[str], None] | None,
) -> None:
    await asyncio.wait_for(_until_ready(gateway), timeout=15)
    for step in scenario(desk):
        view.narrate(step.narration)
        if printer is not None:
            printer(f"» {step.narration}")
        await step.action(site)
        if step.await_kind is not None:
            await _wait_for_kind(journaled, step.await_kind, settings.policy.door_left_open_s + 3, view, show)
        await _pause(step.pause_s / speed, view, show)
    view.narrate("That was the morning. Every event above is in the journal, hash-chained.")
    if printer is not None:
        printer("» That was the morning. Every event above is in the journal, hash-chained.")
    await _pause(1.0 / speed, view, show)


def relocate(settings: Settings, old_root: str, new_root: Path) -> Settings:
    """The settings with every path under `old_root` (state_dir, device ports) moved under `new_root`:
    `lockergw demo` runs in a private directory of its own, so two users' demos never collide."""

    def moved(path: str) -> str:
        return str(new_root) + path[len(old_root) :] if path.startswith(old_root + "/") else path

    gateway = settings.gateway.model_copy(update={"state_dir": Path(moved(str(settings.gateway.state_dir)))})
    readers = [r.model_copy(update={"port": moved(r.port)}) for r in settings.readers]
    boards = [b.model_copy(update={"port": moved(b.port)}) for b in settings.boards]
    return settings.model_copy(update={"gateway": gateway, "readers": readers, "boards": boards})


#: Where config/demo.toml puts its state and devices; `lockergw demo` moves them to a private directory.
DEMO_ROOT = "/tmp/lockergw-demo"


async def _until_ready(gateway: Gateway) -> None:
    while not gateway.ready:
        await asyncio.sleep(0.05)


async def _pause(seconds: float, view: DemoView, show: Callable[[DemoView], Awaitable[None]] | None) -> None:
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        view.read_signals()
        if show is not None:
            await show(view)
        await asyncio.sleep(min(0.1, left))


async def _wait_for_kind(
    journaled: set[str],
    kind: str,
    timeout: float,
    view: DemoView,
    show: Callable[[DemoView], Awaitable[None]] | None,
) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while kind not in journaled and asyncio.get_running_loop().time() < end:
        await _pause(0.1, view, show)


def default_config_path() -> Path:
    here = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
    return Path("config/demo.toml") if Path("config/demo.toml").exists() else here
