"""`lockergw central credentials import FILE.csv --site S` as a user runs it: the §4 CSV rules and central's
issuing rules, all or nothing, one line per bad row, card numbers masked; a good file lands in the outbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from central.database import open_database
from central.schema import credential_changes, credentials

UID = "3C00CE754C"


def lockergw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "central", *args], capture_output=True, text=True, timeout=60
    )


def test_a_csv_is_imported_whole_or_not_at_all_naming_each_bad_line(central_database: str, tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\ndatabase = "{central_database}"\n')
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,uid,holder,role,scope,deposit\n"
        f"C-1,{UID},amira,user,A-01,20\n"
        f"C-2,{UID},ben,user,A-02,\n"  # the same card twice
        "C-3,04AABBCC,carl,wizard,A-03,\n"
        "C-4,04AABBCD,amira,user,A-01,\n"  # a second key for amira's A-01 without approved_by
    )
    refused = lockergw("credentials", "import", str(bad), "--site", "north", "--config", str(config))
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["line 3", "line 4", "line 5"]
    assert "C-1" in lines[0] and "role" in lines[1] and "approved_by" in lines[2]
    assert lines[-1] == "lockergw: bad.csv: nothing imported (3 bad rows; fix and import again)"
    assert UID not in refused.stderr and "Traceback" not in refused.stderr

    good = tmp_path / "good.csv"
    good.write_text(
        f"id,uid,holder,role,scope,deposit\nC-1,{UID},amira,user,A-01;A-02,20\nC-2,04AABBCC,ben,user,A-03,\n"
    )
    engine = open_database(central_database)
    try:
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(credentials)).scalar_one() == 0
        imported = lockergw(
            "credentials", "import", str(good), "--site", "north", "--by", "office", "--config", str(config)
        )
        assert imported.returncode == 0, imported.stderr
        assert "2 added" in imported.stdout and "revision 1" in imported.stdout
        with engine.connect() as connection:
            rows = connection.execute(
                select(credentials.c.id, credentials.c.issued_by).order_by(credentials.c.id)
            ).all()
            assert [tuple(r) for r in rows] == [("C-1", "office"), ("C-2", "office")]
            assert connection.execute(select(credential_changes.c.command)).scalar_one() == "credentials/upsert"
    finally:
        engine.dispose()
    missing = lockergw("credentials", "import", str(tmp_path / "nope.csv"), "--site", "north", "--config", str(config))
    assert (missing.returncode, missing.stderr.strip()) == (2, f"lockergw: {tmp_path / 'nope.csv'}: no such file")
