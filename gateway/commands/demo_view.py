"""What `lockergw demo` shows: the locker bank as a picture beside a scrolling event log.

Fed journal envelopes (the same ones the publisher would send) and the narration of the scenario;
rendered with rich, or as plain lines when the output is not a terminal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

EVENT_STYLES = {
    "access.granted": "green",
    "access.denied": "red",
    "override.pending": "yellow",
    "credential.lost_presented": "bold red",
    "reader.lockout": "bold red",
    "door.forced_open": "bold red",
    "door.left_open": "yellow",
    "unlock.failed": "bold red",
    "locker.allocated": "cyan",
    "locker.released": "cyan",
    "reader.offline": "magenta",
    "board.offline": "magenta",
}


@dataclass
class LockerTile:
    id: str
    mode: str
    owner: str = ""
    door: str = "unknown"
    last: str = ""
    alarm: bool = False


#: How each reader signal looks on its tile: the LED (text, style) and the beeper.
SIGNAL_LOOKS = {
    "granted": ("● GREEN", "bold green", "beep"),
    "denied": ("● RED", "bold red", "beep beep"),
    "pending": ("◌ AMBER blinking", "bold yellow", "beep"),
    "locked_out": ("◌ RED blinking", "bold red", "beep beep beep"),
}


@dataclass
class ReaderTile:
    """A reader with a buzzer/LED line, as the person in front of it sees it."""

    id: str
    signal: str = ""
    seen: int = 0


@dataclass
class DemoView:
    """State of the picture; `apply(envelope)` updates it, `render()` draws it."""

    tiles: dict[str, LockerTile]
    title: str = "lockergw demo"
    log: deque[Text] = field(default_factory=lambda: deque(maxlen=400))
    narration: str = ""
    log_lines: int = 22
    #: Where the live door state comes from (the gateway's door monitor); events update it otherwise.
    door_of: Callable[[str], str] | None = None
    #: Readers whose LED/beeper the demo shows, and where their received signals come from.
    readers: dict[str, ReaderTile] = field(default_factory=dict)
    #: reader id → (how many signals it has received in all, the most recent ones).
    signals_of: Callable[[str], tuple[int, list[str]]] | None = None
    #: Told of each new signal (the plain, non-terminal output).
    on_signal: Callable[[str, str], None] | None = None

    def read_signals(self) -> None:
        """Take the signals the simulated readers received since the last look."""
        if self.signals_of is None:
            return
        for tile in self.readers.values():
            count, recent = self.signals_of(tile.id)
            fresh = recent[len(recent) - min(count - tile.seen, len(recent)) :] if count > tile.seen else []
            for signal in fresh:
                tile.signal = signal
                if self.on_signal is not None:
                    self.on_signal(tile.id, signal)
            tile.seen = count

    def narrate(self, text: str) -> None:
        self.narration = text
        self.log.append(Text(f"» {text}", style="bold", no_wrap=True, overflow="ellipsis"))

    def apply(self, envelope: dict[str, Any]) -> Text:
        kind = envelope["kind"]
        locker = envelope.get("locker")
        tile = self.tiles.get(locker) if isinstance(locker, str) else None
        credential = envelope.get("credential") or {}
        who = credential.get("holder") or ""
        if tile is not None:
            if kind == "access.granted":
                tile.last = f"opened for {who or envelope.get('reason')}"
                tile.alarm = envelope.get("unlock") == "failed"
            elif kind == "locker.allocated":
                tile.owner = who
            elif kind == "locker.released":
                tile.owner = ""
            elif kind == "door.opened":
                tile.door = "open"
            elif kind == "door.closed":
                tile.door, tile.alarm = "closed", False
            elif kind in ("door.left_open", "door.forced_open", "unlock.failed"):
                tile.alarm = True
                tile.last = kind.removeprefix("door.")
        line = describe(envelope)
        self.log.append(line)
        return line

    def render(self, height: int | None = None) -> RenderableType:
        if height is not None:
            self.log_lines = max(5, height - 4)
        if self.door_of is not None:
            for tile in self.tiles.values():
                if tile.mode != "keyed":
                    tile.door = self.door_of(tile.id)
        grid = Table.grid(padding=(0, 1))
        tiles = list(self.tiles.values())
        columns = 3
        for _ in range(columns):
            grid.add_column()
        for start in range(0, len(tiles), columns):
            grid.add_row(*[_tile(tile) for tile in tiles[start : start + columns]])
        readers = list(self.readers.values())
        for start in range(0, len(readers), columns):
            grid.add_row(*[_reader_tile(tile) for tile in readers[start : start + columns]])
        layout = Layout()
        layout.split_row(
            Layout(Panel(grid, title="lockers"), name="bank", ratio=5),
            Layout(Panel(Group(*list(self.log)[-self.log_lines :]), title="events"), name="log", ratio=6),
        )
        outer = Layout()
        outer.split_column(
            Layout(Text(f" {self.title}   {self.narration}", style="bold white on blue"), size=1),
            layout,
        )
        return outer


def _tile(tile: LockerTile) -> Panel:
    door = "keyed" if tile.mode == "keyed" else tile.door
    door_style = {"open": "bold green", "closed": "dim", "unknown": "yellow", "keyed": "blue"}[door]
    body = Text()
    body.append(f"{door.upper():7}", style=door_style)
    body.append(f" {tile.mode}\n", style="dim")
    body.append(f"{tile.owner or '—'}\n")
    body.append(tile.last[:22], style="italic")
    border = "red" if tile.alarm else ("green" if tile.door == "open" else "white")
    return Panel(body, title=tile.id, border_style=border, width=26, height=5)


def _reader_tile(tile: ReaderTile) -> Panel:
    led, style, beeps = SIGNAL_LOOKS.get(tile.signal, ("○ idle", "dim", ""))
    body = Text()
    body.append(f"{led}\n", style=style)
    body.append(beeps, style="italic")
    return Panel(body, title=f"reader {tile.id}", border_style=style if tile.signal else "white", width=26, height=4)


def describe(envelope: dict[str, Any]) -> Text:
    """One log line: seq, time, kind and what matters about it (never a raw card number)."""
    kind = envelope["kind"]
    parts = [f"#{envelope['seq']:<4} {envelope['ts'][11:19]} {kind}"]
    for key in ("reader", "board", "locker"):
        if envelope.get(key):
            parts.append(f"{key}={envelope[key]}")
    credential = envelope.get("credential") or {}
    if credential.get("holder"):
        parts.append(f"holder={credential['holder']}")
    if envelope.get("reason"):
        parts.append(f"reason={envelope['reason']}")
    if envelope.get("authorizers"):
        parts.append("by=" + "+".join(a.get("holder") or a.get("id") or "?" for a in envelope["authorizers"]))
    return Text(" ".join(parts), style=EVENT_STYLES.get(kind, ""), no_wrap=True, overflow="ellipsis")
