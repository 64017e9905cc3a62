"""The I/O loop shared by readers that send card frames over a serial line (RDM6300, serial-ascii).

A `SerialReader` owns a reconnecting `SerialLink`; each chunk the port delivers goes through the
driver's pure frame parser, then the presence filter (one tap per presentation) and the bad-frame
counter (one `ReaderFault` per burst of garbage). Subclasses only say how to parse.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from drivers.base import CardRead, DeviceOffline, DeviceOnline, Emit, Feedback, Reader, ReaderFault, Signal, utcnow
from drivers.presence import BadFrameCounter, PresenceFilter
from drivers.serial_link import SerialLink, read_chunks


@dataclass
class ParseResult:
    """What a parser made of one chunk: the uids of the good frames, in order, and how many were bad."""

    uids: list[str] = field(default_factory=list)
    bad_frames: int = 0


def feedback_bytes(texts: Mapping[str, str] | None) -> dict[Signal, bytes]:
    """A reader's configured feedback texts (signal name → text) as the bytes to send (Latin-1)."""
    return {Signal(name): text.encode("latin-1") for name, text in (texts or {}).items() if text}


class FrameParser(Protocol):
    def feed(self, data: bytes) -> ParseResult: ...


class SerialReader(Reader):
    """`feedback_bytes`: what to write to the port for each signal, for readers and converters that
    drive a buzzer/LED line from their serial input; a signal without bytes is not sent."""

    def __init__(
        self,
        device_id: str,
        port: str,
        *,
        baudrate: int,
        repeat_gap_s: float,
        feedback_bytes: Mapping[Signal, bytes] | None = None,
    ) -> None:
        super().__init__(device_id)
        self.port = port
        self.baudrate = baudrate
        self.presence = PresenceFilter(repeat_gap_s)
        self.faults = BadFrameCounter()
        self.feedback_bytes = {signal: data for signal, data in (feedback_bytes or {}).items() if data}
        self._writer: asyncio.StreamWriter | None = None

    def feedback(self, feedback: Feedback) -> None:
        data = self.feedback_bytes.get(feedback.signal)
        writer = self._writer
        if data and writer is not None and not writer.is_closing():
            writer.write(data)  # buffered by the transport: never waits for the port

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

        async def session(stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parser = self.new_parser()

            def on_data(data: bytes) -> None:
                self.handle(parser.feed(data), loop.time(), emit)

            self._writer = writer
            try:
                await read_chunks(stream, on_data)
            finally:
                self._writer = None

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
