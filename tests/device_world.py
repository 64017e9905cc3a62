"""Helpers for driver and simulator tests: a configuration in tmp_path and a log of device events.

Everything is real: the simulators publish pseudo-terminals at paths under tmp_path and the drivers
open them through pyserial. Waiting is always on events, bounded by asyncio.wait_for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from drivers.base import BoardStatus, DeviceEvent, LockBoard, Reader
from gateway.config import Settings

E = TypeVar("E")

WAIT_S = 3.0


def make_settings(
    tmp_path: Path,
    *,
    readers: Iterable[dict[str, Any]] = (),
    boards: Iterable[dict[str, Any]] = (),
    lockers: Iterable[dict[str, Any]] = (),
) -> Settings:
    """Settings with ports resolved under tmp_path/dev (a port "r1" becomes tmp_path/dev/r1)."""

    def place(item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "port": str(tmp_path / "dev" / item["port"])}

    return Settings.model_validate(
        {
            "gateway": {"id": "gw-test", "site": "test", "state_dir": str(tmp_path / "state")},
            "readers": [place(r) for r in readers],
            "boards": [place(b) for b in boards],
            "lockers": list(lockers),
        }
    )


class EventLog:
    """Collects DeviceEvents. `next(kind, device)` returns the next event of that kind from that device,
    passing over (and dropping) earlier ones of the same kind and device that `where` rejects; events
    of other kinds or devices stay pending for their own `next`."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._pending: list[DeviceEvent] = []
        self._arrived = asyncio.Event()

    def emit(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self._pending.append(event)
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def next(
        self,
        kind: type[E],
        device: str | None = None,
        where: Callable[[E], bool] | None = None,
        timeout: float = WAIT_S,
    ) -> E:
        def same(event: DeviceEvent) -> bool:
            return _matches(event, kind, device)

        async def wait() -> E:
            while True:
                for index, event in enumerate(self._pending):
                    if same(event) and (where is None or where(event)):  # type: ignore[arg-type]
                        self._pending = [e for i, e in enumerate(self._pending) if i > index or not same(e)]
                        return event  # type: ignore[return-value]
                await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type[E], device: str | None = None) -> list[E]:
        return [event for event in self.events if _matches(event, kind, device)]  # type: ignore[misc]

    async def statuses(self, board: str, count: int, timeout: float = WAIT_S) -> list[BoardStatus]:
        """The next `count` status reports of a board."""
        return [await self.next(BoardStatus, board, timeout=timeout) for _ in range(count)]


def _matches(event: DeviceEvent, kind: type[Any], device: str | None) -> bool:
    return isinstance(event, kind) and (device is None or getattr(event, "device", None) == device)


@contextlib.asynccontextmanager
async def running(devices: Iterable[Reader | LockBoard], log: EventLog) -> AsyncIterator[None]:
    """Run each device's task for the duration of the block, then cancel them all."""
    tasks = [asyncio.get_running_loop().create_task(device.run(log.emit)) for device in devices]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
