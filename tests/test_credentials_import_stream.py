"""`lockergw credentials import` of files larger than one batch (the import reads, checks and writes a
file batch by batch in one transaction): a bad row in the last batch still refuses the whole file and
is named by its line; a card clash across batches is caught; a clean file is in force on a running
gateway, down to a card in its last batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway_world import running, write_site

import gateway.store
from gateway.cli import main
from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)

HEADER = "id,uid,holder,role,scope"
BATCH = 5_000  # the import's batch for these tests: 20,000 rows are four batches


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.store, "BATCH_ITEMS", BATCH)


def row(n: int, uid: int | None = None, scope: str = "") -> str:
    return f"S-{n:06d},{0x3C00000000 + (n if uid is None else uid):010X},pupil-{n},user,{scope}"


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def config_for(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "gw-01"\nsite = "s"\nstate_dir = "{tmp_path / "state"}"\ntimezone = "Europe/London"\n',
        encoding="utf-8",
    )
    return path


def test_a_duplicate_id_in_the_last_batch_refuses_20000_rows_and_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    rows = [row(n) for n in range(20_000)]
    rows[19_990] = "S-000003,AABBCCDD01,pupil-x,user,"  # S-000003 again, on line 19,992
    code = main(["credentials", "import", str(write_rows(tmp_path / "big.csv", rows)), "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0] == "line 19992: id: S-000003 is given twice in one batch"
    assert err[-1].endswith("nothing imported (1 bad row; fix and import again)") and len(err) == 2
    with Store.open(tmp_path / "state") as store:
        assert store.count() == 0 and store.rev == 0


def test_a_uid_clash_across_batches_is_caught_with_both_rows_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    rows = [row(n) for n in range(12_000)]
    rows[11_500] = row(11_500, uid=42)  # the card of S-000042, two batches earlier
    code = main(["credentials", "import", str(write_rows(tmp_path / "clash.csv", rows)), "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith("line 11502: uid: ") and err[0].endswith("is already on credential S-000042")
    assert "3C0000002A" not in "\n".join(err)  # masked
    with Store.open(tmp_path / "state") as store:
        assert store.count() == 0


def test_more_than_a_hundred_bad_rows_are_counted_and_the_first_hundred_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path)
    rows = [row(n).replace(",user,", ",usr,") if n % 50 == 0 else row(n) for n in range(12_000)]
    code = main(["credentials", "import", str(write_rows(tmp_path / "bad.csv", rows)), "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert [line.split(":")[0] for line in err[:2]] == ["line 2", "line 52"] and len(err) == 102
    assert err[100] == "… and 140 more bad rows (the first 100 are shown)"
    assert err[-1].endswith("nothing imported (240 bad rows; fix and import again)")


async def test_a_multi_batch_import_is_in_force_on_the_running_gateway_to_its_last_row(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    settings.gateway.state_dir.mkdir(parents=True)
    last = 11_999
    rows = [row(n, scope="A-03" if n == last else f"L-{n % 100:03d}") for n in range(last + 1)]
    path = write_rows(tmp_path / "school.csv", rows)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="bank-a")
        mark = len(gw.events)
        code = await asyncio.to_thread(main, ["credentials", "import", str(path), "--config", str(config)])
        assert code == 0
        changed = await gw.wait_for("credentials.changed", since=mark, timeout=30)
        assert changed["count"] == 12_000
        await site.tap("bank-a", f"{0x3C00000000 + last:010X}")
        granted = await gw.wait_for("access.granted", since=mark, locker="A-03")
        assert granted["credential"]["id"] == f"S-{last:06d}"
