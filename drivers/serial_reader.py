"""The I/O loop shared by readers that send card frames over a serial line (RDM6300, serial-ascii).

A `SerialReader` owns a reconnecting `SerialLink`; each chunk the port delivers goes through the
driver's pure frame parser, then the presence filter (one tap per presentation) and the bad-frame
counter (one `ReaderFault` per burst of garbage). Subclasses only say how to parse.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from drivers.base import CardRead, DeviceOffline, DeviceOnline, Emit, Reader, ReaderFault, utcnow
from drivers.presence import BadFrameCounter, PresenceFilter
from drivers.serial_link import SerialLink, read_chunks


@dataclass
class ParseResult:
    """What a parser made of one chunk: the uids of the good frames, in order, and how many were bad."""

    uids: list[str] = field(default_factory=list)
    bad_frames: int = 0


class FrameParser(Protocol):
    def feed(self, data: bytes) -> ParseResult: ...


class SerialReader(Reader):
    def __init__(self, device_id: str, port: str, *, baudrate: int, repeat_gap_s: float) -> None:
        super().__init__(device_id)
        self.port = port
        self.baudrate = baudrate
        self.presence = PresenceFilter(repeat_gap_s)
        self.faults = BadFrameCounter()

    @abc.abstractmethod
    def new_parser(self) -> FrameParser:
        """A fresh parser; one per connection, so no half frame survives a reconnect."""

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()

        def online() -> None:
            self.online = True
            emit(DeviceOnline(self.id, utcnow()))

        def offline(reason: str) -> None:
            self.online = False
            emit(DeviceOffline(self.id, utcnow(), reason))

        async def session(stream: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            parser = self.new_parser()

            def on_data(data: bytes) -> None:
                self.handle(parser.feed(data), loop.time(), emit)

            await read_chunks(stream, on_data)

        await SerialLink(self.port, self.baudrate, on_online=online, on_offline=offline).run(session)

    def handle(self, result: ParseResult, now: float, emit: Emit) -> None:
        """Turn one chunk's frames into events: a fault when garbage persists, a tap per presentation."""
        if result.bad_frames:
            self.bad_frames += result.bad_frames
            in_window = self.faults.bad(now, result.bad_frames)
            if in_window is not None:
                emit(ReaderFault(self.id, utcnow(), in_window))
        for uid in result.uids:
            self.faults.good()
            if self.presence.is_new_tap(uid, now):
                emit(CardRead(self.id, uid, utcnow()))
