"""`lockergw credentials …` as an operator uses it (SPEC §4 "The credentials CLI").

Most cases call `gateway.cli.main` in-process against a real store in tmp_path; the console script
itself runs as a subprocess for the 100,000-row import and for working beside a running daemon.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import tty
from datetime import UTC, datetime
from pathlib import Path

import pytest
from store_changes import changes_since

from gateway.cli import main
from gateway.model import Status
from gateway.store import Store

UID = "3C00CE754C"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "gw-01"
site = "north-school"
state_dir = "{tmp_path / "state"}"
timezone = "Europe/London"
""",
        encoding="utf-8",
    )
    return path


class Cli:
    """Runs `lockergw credentials VERB … --config FILE` in-process and keeps what it printed."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self, *args: str) -> int:
        code = main(["credentials", *args, "--config", str(self.config)])
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        assert "Traceback" not in self.err
        return code

    def store(self) -> Store:
        return Store.open(self.config.parent / "state")


@pytest.fixture
def cli(config: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config, capsys)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_add_list_and_show_never_print_a_whole_uid(cli: Cli) -> None:
    assert cli("add", "--id", "C-1", "--uid", UID, "--holder", "u-1", "--role", "user", "--scope", "A-02") == 0
    assert "C-1" in cli.out and "…754C" in cli.out and UID not in cli.out
    assert cli("list") == 0
    header, row = cli.out.strip().splitlines()
    assert header.split()[:3] == ["ID", "UID", "HOLDER"] and row.split()[:3] == ["C-1", "…754C", "u-1"]
    assert cli("list", "--csv") == 0
    (record,) = csv.DictReader(io.StringIO(cli.out))
    assert (record["id"], record["uid"], record["scope"], record["issue_no"]) == ("C-1", "…754C", "A-02", "1")
    assert cli("show", "C-1") == 0
    assert "uid:" in cli.out and "…754C" in cli.out and UID not in cli.out
    assert UID not in cli.out + cli.err


def test_add_reads_times_in_the_gateway_zone(cli: Cli) -> None:
    args = ["--holder", "u-1", "--role", "user", "--scope", "A-02"]
    assert (
        cli("add", "--id", "C-1", "--uid", UID, *args, "--valid-from", "2026-09-01", "--valid-until", "2027-07-23") == 0
    )
    with cli.store() as store:
        credential = store.get("C-1")
    assert credential is not None
    assert credential.valid_from == datetime(2026, 8, 31, 23, 0, tzinfo=UTC)  # midnight BST
    assert credential.valid_until == datetime(2027, 7, 23, 23, 0, tzinfo=UTC)  # the whole of 23 July
    assert cli("show", "C-1") == 0
    assert "2026-09-01 00:00+01:00" in cli.out and "2027-07-24 00:00+01:00" in cli.out  # the terminal form


def test_a_duplicate_without_approval_is_one_line_and_exit_2(cli: Cli) -> None:
    base = ["--holder", "u-1", "--role", "user", "--scope", "A-02"]
    assert cli("add", "--id", "C-1", "--uid", UID, *base) == 0
    assert cli("add", "--id", "C-2", "--uid", "AABBCCDD", *base) == 2
    line = one_line(cli.err)
    assert "C-1" in line and "C-2" in line and "approved_by" in line
    assert cli("add", "--id", "C-2", "--uid", "AABBCCDD", *base, "--approved-by", "head") == 0
    assert "issue 2" in cli.out


def test_physical_keys_are_issued_with_duplicate_control_on_the_key_code(cli: Cli) -> None:
    base = ["--role", "user", "--kind", "physical_key", "--key-code", "9A-114", "--scope", "K-01"]
    assert cli("add", "--id", "K-1", "--holder", "u-1", *base) == 0
    assert cli("add", "--id", "K-2", "--holder", "u-2", *base) == 2
    assert "K-1" in one_line(cli.err) and "9A-114" in cli.err
    assert cli("add", "--id", "K-2", "--holder", "u-2", *base, "--approved-by", "estates") == 0
    assert cli("show", "K-2") == 0
    assert "2 outstanding for code 9A-114" in cli.out


def add(ident: str, uid: str, *more: str, role: str = "user") -> list[str]:
    return ["add", "--id", ident, "--uid", uid, "--holder", "u-9", "--role", role, *more]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (add("C-1", "AA01"), "C-1 already exists"),
        (add("C-5", UID), "…754C is already on credential C-1"),
        (add("C-5", "xx" + UID), "uid:"),
        (add("C-5", "AA05", role="janitor"), "role:"),
        (add("C-5", "AA05", "--valid-from", "soon"), "valid_from:"),
        (
            add("C-5", "AA05", "--valid-from", "2026-05-02", "--valid-until", "2026-05-01"),
            "valid_until: must be after valid_from",
        ),
        (["show", "C-9"], "no credential with id 'C-9'"),
        (["set-status", "C-1", "misplaced"], "unknown status 'misplaced'"),
        (["set-status", "C-9", "lost"], "no credential with id 'C-9'"),
        (["replace", "C-9", "AA09"], "no credential with id 'C-9'"),
        (["remove", "C-9"], "no credential with id 'C-9'"),
    ],
)
def test_user_errors_are_one_plain_line_and_exit_2(cli: Cli, args: list[str], expected: str) -> None:
    assert cli("add", "--id", "C-1", "--uid", UID, "--holder", "u-1", "--role", "user", "--scope", "A-01") == 0
    assert cli(*args) == 2
    assert expected in one_line(cli.err)
    assert UID not in cli.err


def test_set_status_and_remove_refusal(cli: Cli) -> None:
    assert cli("add", "--id", "C-1", "--uid", UID, "--holder", "u-1", "--role", "user", "--scope", "A-01") == 0
    assert cli("remove", "C-1") == 2
    assert "still active" in one_line(cli.err) and "--force" in cli.err
    assert cli("set-status", "C-1", "lost", "--reason", "left on the bus", "--by", "desk") == 0
    assert one_line(cli.out) == "C-1 is now lost (was active)"
    assert cli("remove", "C-1") == 2
    assert "still lost" in cli.err
    assert cli("set-status", "C-1", "returned") == 0
    assert cli("remove", "C-1") == 0
    with cli.store() as store:
        assert store.count() == 0
        assert [(entry.action, entry.by, entry.reason) for entry in changes_since(store, 1).log] == [
            ("set_status", "desk", "left on the bus"),
            ("set_status", "cli", None),
            ("remove", "cli", None),
        ]


def test_remove_force_takes_out_an_active_credential(cli: Cli) -> None:
    assert cli("add", "--id", "C-1", "--uid", UID, "--holder", "u-1", "--role", "user") == 0
    assert cli("remove", "C-1", "--force") == 0
    assert cli("show", "C-1") == 2


def test_replace_names_the_successor_after_its_issue_number(cli: Cli) -> None:
    assert cli("add", "--id", "C-1", "--uid", UID, "--holder", "u-1", "--role", "user", "--scope", "A-01") == 0
    assert cli("replace", "C-1", "dec:0013530445") == 0
    assert (
        one_line(cli.out).startswith("C-1 replaced by C-1-2: ") and "issue 2" in cli.out and "…4D" in cli.out
    )  # 8 hex characters: the last 2 are shown (SPEC §4)
    assert cli("replace", "C-1-2", "11:22:33:44", "--new-id", "C-1-spare", "--by", "desk") == 0
    assert "C-1-2 replaced by C-1-spare" in cli.out and "issue 3" in cli.out
    assert cli("replace", "C-1", "55667788") == 2
    assert "C-1 is replaced" in one_line(cli.err)
    with cli.store() as store:
        statuses = {credential.id: credential.status for credential in store.all()}
    assert statuses == {"C-1": Status.REPLACED, "C-1-2": Status.REPLACED, "C-1-spare": Status.ACTIVE}


def write_csv(path: Path, rows: list[str], header: str = "id,uid,holder,role,scope") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_import_merges_by_id(cli: Cli, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", ["C-1,AA01,u-1,user,A-01;A-02", "C-2,AA02,u-2,user,A-03"])
    assert cli("import", str(first), "--by", "office") == 0
    assert "2 added, 0 updated, 0 unchanged" in cli.out
    second = write_csv(tmp_path / "b.csv", ["C-1,AA01,u-1,user,A-01", "C-2,AA02,u-2,user,A-03", "C-3,AA03,u-3,user,"])
    assert cli("import", str(second)) == 0
    assert "1 added, 1 updated, 1 unchanged" in cli.out
    with cli.store() as store:
        c1 = store.get("C-1")
        assert c1 is not None and c1.scope == ("A-01",) and c1.issued_by == "office"
        assert store.count() == 3


def test_import_with_one_bad_row_imports_nothing_and_names_the_line(cli: Cli, tmp_path: Path) -> None:
    rows = ["C-1,AA01,u-1,user,A-01", "", "C-2,AA02,u-2,user,A-02", "C-3,AA03,u-3,usr,A-03", "C-4,AA04,u-4,user,A-04"]
    path = write_csv(tmp_path / "bad.csv", rows)
    assert cli("import", str(path)) == 2
    lines = cli.err.strip().splitlines()
    assert (
        lines[0] == "line 5: role: 'usr' is not one of: user, section_master, department_master, site_master, emergency"
    )
    assert "nothing imported" in lines[-1] and len(lines) == 2
    with cli.store() as store:
        assert store.count() == 0 and store.rev == 0


def test_import_reports_every_bad_row_including_duplicates_against_store_and_file(cli: Cli, tmp_path: Path) -> None:
    assert cli("add", "--id", "C-0", "--uid", UID, "--holder", "u-0", "--role", "user", "--scope", "A-00") == 0
    rows = [
        "C-1,AA01,u-1,user,A-01",
        "C-2,AA02,u-1,user,A-01",  # second key of u-1 for A-01 in the same file
        'C-3,AA03,"u-3",user,"A-03;A-04"',
        "C-4,AA04,u-0,user,A-00",  # second key of u-0 for A-00 against the store
        f"C-5,{UID},u-5,user,A-05",  # uid already issued
        "C-6,AA06,u-6,user,A-06,surplus",
        "C-1,AA07,u-7,user,A-07",  # the same id twice
    ]
    assert cli("import", str(write_csv(tmp_path / "dups.csv", rows))) == 2
    problems = cli.err.strip().splitlines()[:-1]
    assert [line.split(":")[0] for line in problems] == ["line 3", "line 5", "line 6", "line 7", "line 8"]
    assert "C-1" in problems[0] and "approved_by" in problems[0]
    assert "C-0" in problems[1] and "approved_by" in problems[1]
    assert "…754C is already on credential C-0" in problems[2] and UID not in cli.err
    assert "6 cells but the header names 5" in problems[3] and "given twice" in problems[4]
    with cli.store() as store:
        assert store.count() == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("id,uid,holder,role,scope,colour", "line 1: colour: unknown column"),
        ("id,uid,holder,scope", "line 1: role: missing column"),
        ("id,uid,holder,role,uid", "line 1: uid: the column appears twice"),
    ],
)
def test_import_header_faults(cli: Cli, tmp_path: Path, header: str, expected: str) -> None:
    assert cli("import", str(write_csv(tmp_path / "h.csv", ["C-1,AA01,u-1,user,A-01"], header=header))) == 2
    assert cli.err.startswith(expected)


def test_import_file_faults_are_one_line(cli: Cli, tmp_path: Path) -> None:
    assert cli("import", str(tmp_path / "missing.csv")) == 2
    assert "no such file" in one_line(cli.err)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,uid,holder,role\nC-1,AA01,Zo\xeb,user\n".encode("latin-1"))
    assert cli("import", str(latin)) == 2
    assert "not UTF-8" in one_line(cli.err)


def test_import_dry_run_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    assert cli("import", str(write_csv(tmp_path / "a.csv", ["C-1,AA01,u-1,user,A-01"])), "--dry-run") == 0
    assert "dry run" in cli.out
    with cli.store() as store:
        assert store.count() == 0


def test_config_faults_and_mistyped_command_lines(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["credentials", "list", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["credentials", "lisst"])
    assert usage.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_enroll_needs_a_configured_reader(cli: Cli) -> None:
    assert cli("enroll", "--reader", "bank-z") == 2
    assert "no reader 'bank-z'" in one_line(cli.err)


# ---- the console script ------------------------------------------------------------------------


def lockergw(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("lockergw")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)


def test_a_100000_row_import_completes_and_counts_are_right(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "school.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,uid,holder,role,scope,kind,valid_from,valid_until,schedule\n")
        for n in range(100_000):
            handle.write(
                f"S-{n:06d},{0x3C00000000 + n:010X},pupil-{n},user,L-{n % 2000:04d},card,"
                "2026-09-01,2027-07-23,Mon-Fri 07:30-18:00\n"
            )
    done = lockergw("credentials", "import", str(path), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "100000 rows — 100000 added, 0 updated, 0 unchanged" in done.stdout
    with Store.open(tmp_path / "state") as store:
        assert store.count() == 100_000
        assert store.rev == 1
        assert len(store.keys_for_locker("L-0007")) == 50
        last = store.get("S-099999")
        assert (
            last is not None and last.uid == f"{0x3C00000000 + 99_999:010X}" and last.schedule == "Mon-Fri 07:30-18:00"
        )


def test_the_cli_changes_the_store_a_running_daemon_has_open(config: Path, tmp_path: Path) -> None:
    with Store.open(tmp_path / "state") as daemon:
        seen = daemon.rev
        done = lockergw(
            "credentials",
            "add",
            "--config",
            str(config),
            "--id",
            "C-1",
            "--uid",
            UID,
            "--holder",
            "u-1",
            "--role",
            "user",
        )
        assert done.returncode == 0, done.stderr
        assert UID not in done.stdout + done.stderr
        changes = changes_since(daemon, seen)
        assert [credential.id for credential in changes.upserted] == ["C-1"]
        assert changes.log[0].by == "cli"


def test_enroll_shows_the_uid_of_the_next_card_at_the_reader(tmp_path: Path) -> None:
    """A real RDM6300 frame stream on a pseudo-terminal: the card is 'held' (a frame every 65 ms)
    until enroll has read it, as a real reader repeats its frame while the card is in the field."""
    master, slave = os.openpty()
    tty.setraw(slave)
    config = tmp_path / "enroll.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-01"
site = "north-school"
state_dir = "{tmp_path / "state"}"

[[readers]]
id = "desk"
driver = "rdm6300"
port = "{os.ttyname(slave)}"
""",
        encoding="utf-8",
    )
    frame = bytes.fromhex("02 33 43 30 30 43 45 37 35 34 43 43 42 03")  # 3C00CE754C, checksum CB
    script = Path(sys.executable).with_name("lockergw")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    enroll = subprocess.Popen(
        [*command, "credentials", "enroll", "--reader", "desk", "--timeout", "30", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while enroll.poll() is None and time.monotonic() < deadline:
            os.write(master, frame)
            time.sleep(0.065)  # the reader's repeat interval while a card is held, not a synchronisation
        out, err = enroll.communicate(timeout=10)
    finally:
        if enroll.poll() is None:
            enroll.kill()
            enroll.communicate()
        os.close(master)
        os.close(slave)
    assert enroll.returncode == 0, err
    assert out == "3C00CE754C\n"
    assert "waiting" in err and "Traceback" not in err


def test_enroll_at_a_reader_whose_port_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "enroll.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-01"
site = "north-school"
state_dir = "{tmp_path / "state"}"

[[readers]]
id = "desk"
driver = "rdm6300"
port = "{tmp_path / "no-such-tty"}"
""",
        encoding="utf-8",
    )
    done = lockergw("credentials", "enroll", "--reader", "desk", "--timeout", "20", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("lockergw: reader 'desk': ")
    assert "Traceback" not in done.stderr


def test_show_says_when_a_uid_was_enrolled_from_a_printed_fob_form(cli: Cli) -> None:
    assert cli("add", "--id", "F-1", "--uid", "dec:0013530444", "--holder", "u-1", "--role", "user") == 0
    assert cli("show", "F-1") == 0
    assert "…4C (the number printed on a fob: also matches EM4100 readers by its low 32 bits)" in cli.out
