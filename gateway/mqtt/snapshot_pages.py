"""A credential snapshot sent in pages (`credentials/snapshot`, SPEC §7), put together before it is applied.

Pages may come in any order and again; a snapshot with another version (or page count) abandons the
one in hand, and one whose next page does not come within SNAPSHOT_IDLE_S is dropped. What is held
in memory is bounded (MAX_SNAPSHOT_CREDENTIALS). Only when every page is in is the whole set handed
back, checked that no id comes on two pages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.credential_input import CredentialFields

log = logging.getLogger("lockergw.mqtt")

#: A snapshot in transfer is held in memory until its last page: bound what a sender can pile up.
MAX_SNAPSHOT_CREDENTIALS = 1_500_000
#: A snapshot whose next page does not come within this long is dropped.
SNAPSHOT_IDLE_S = 600.0


class SnapshotRefused(Exception):
    """A page that is refused; the message is the response's `error` (nothing changed)."""


@dataclass(slots=True)
class PartialSnapshot:
    version: int | str
    pages: int
    received: dict[int, list[CredentialFields]] = field(default_factory=dict)
    last_page_at: float = field(default_factory=time.monotonic)

    def held(self) -> int:
        return sum(len(items) for items in self.received.values())


class SnapshotAssembler:
    """Holds at most one snapshot in transfer."""

    def __init__(self) -> None:
        self._partial: PartialSnapshot | None = None

    def add_page(
        self, version: int | str, page: int, pages: int, items: list[CredentialFields]
    ) -> list[CredentialFields] | dict[str, Any]:
        """Take one page: the whole snapshot (in page order) when it was the last one missing, else
        the progress to answer with. `page` is within 1..`pages` (the request model and handler check).
        Raises SnapshotRefused."""
        partial = self._partial
        if partial is not None and time.monotonic() - partial.last_page_at > SNAPSHOT_IDLE_S:
            log.info("credential snapshot %r dropped: no page for %.0f s", partial.version, SNAPSHOT_IDLE_S)
            partial = self._partial = None
        if partial is None or partial.version != version or partial.pages != pages:
            if partial is not None:
                log.info(
                    "credential snapshot %r abandoned after %d of %d pages: snapshot %r started",
                    partial.version,
                    len(partial.received),
                    partial.pages,
                    version,
                )
            partial = self._partial = PartialSnapshot(version, pages)
        if partial.held() - len(partial.received.get(page, [])) + len(items) > MAX_SNAPSHOT_CREDENTIALS:
            self._partial = None
            raise SnapshotRefused(
                f"snapshot {version!r} holds more than {MAX_SNAPSHOT_CREDENTIALS} credentials; dropped, nothing changed"
            )
        partial.received[page] = items
        partial.last_page_at = time.monotonic()
        if len(partial.received) < partial.pages:
            return {
                "snapshot": version,
                "page": page,
                "pages": pages,
                "received": len(partial.received),
                "complete": False,
            }
        self._partial = None
        everything = [item for number in sorted(partial.received) for item in partial.received[number]]
        ids: dict[str, int] = {}
        for item in everything:
            ids[item["id"]] = ids.get(item["id"], 0) + 1
        twice = [i for i, n in ids.items() if n > 1]
        if twice:
            raise SnapshotRefused(
                f"snapshot {version!r}: id {twice[0]!r} appears on more than one page; nothing changed"
            )
        return everything
