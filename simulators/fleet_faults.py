"""The delivery faults `lockergw fleet-sim` injects (SPEC §11), as rates per published event.

- `drop`: the event is journaled but not published live; `events/replay` still serves it, so a
  consumer that asks gets it back (`historical: true`).
- `dup`: published twice.
- `reorder`: held back and published right after the gateway's next event.
- `tamper`: one field altered in transit without re-hashing (the journal keeps the genuine event,
  so a replay publishes the original).

`Faults.parse("drop=0.01,dup=0.01")` reads the command line's form; each decision draws from the
fleet's seeded random generator, so a seed gives the same faults at the same seqs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from enum import Enum


class Fault(Enum):
    DROP = "drop"
    DUP = "dup"
    REORDER = "reorder"
    TAMPER = "tamper"


class FaultsError(ValueError):
    """A `--faults` value that cannot be read; the message is one line naming the fault."""


@dataclass(frozen=True, slots=True)
class Faults:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    tamper: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Faults:
        """`name=rate,…` with names drop, dup, reorder, tamper and rates between 0 and 1 (empty: none)."""
        known = [f.name for f in fields(cls)]
        rates: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep:
                raise FaultsError(f"--faults: {part!r} is not name=rate (e.g. drop=0.01)")
            if name not in known:
                raise FaultsError(f"--faults: unknown fault {name!r} (one of: {', '.join(known)})")
            if name in rates:
                raise FaultsError(f"--faults: {name} is given twice")
            try:
                rate = float(value)
            except ValueError:
                raise FaultsError(f"--faults: {name}={value.strip()!r} is not a number") from None
            if not 0.0 <= rate <= 1.0:
                raise FaultsError(f"--faults: {name}={value.strip()} must be between 0 and 1")
            rates[name] = rate
        faults = cls(**rates)
        if faults.drop + faults.dup + faults.reorder + faults.tamper > 1.0:
            raise FaultsError("--faults: the rates add up to more than 1 (each event suffers at most one fault)")
        return faults

    def draw(self, rng: random.Random) -> Fault | None:
        """At most one fault for the next event, each with its configured probability."""
        roll = rng.random()
        for fault, rate in (
            (Fault.DROP, self.drop),
            (Fault.DUP, self.dup),
            (Fault.REORDER, self.reorder),
            (Fault.TAMPER, self.tamper),
        ):
            if roll < rate:
                return fault
            roll -= rate
        return None

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))
