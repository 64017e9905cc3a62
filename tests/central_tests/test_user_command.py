"""`lockergw central user …`: passwords from standard input (never an argument), one plain line per
mistake, and the changes in the audit log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from central.database import open_database
from central.schema import audit_log, console_users


def lockergw(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "central", "user", *args, "--config", str(config)],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_add_list_passwd_remove_with_passwords_from_standard_input(tmp_path: Path, sqlite_url: str) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\nid = "c1"\ndatabase = "{sqlite_url}"\n')
    added = lockergw(config, "add", "--name", "olive", "--role", "operator", stdin="correct horse battery\n")
    assert added.returncode == 0 and added.stdout.strip() == "user olive (operator) added", added.stderr
    again = lockergw(config, "add", "--name", "olive", "--role", "viewer", stdin="correct horse battery\n")
    assert again.returncode == 2 and again.stderr.strip() == "lockergw: there is already a user named 'olive'"
    short = lockergw(config, "add", "--name", "vera", "--role", "viewer", stdin="short\n")
    assert short.returncode == 2 and "password: must be at least 10 characters" in short.stderr
    listed = lockergw(config, "list")
    assert "olive" in listed.stdout and "operator" in listed.stdout and "vera" not in listed.stdout
    changed = lockergw(config, "passwd", "--name", "olive", stdin="another long password\n")
    assert changed.returncode == 0 and "sessions have ended" in changed.stdout
    assert lockergw(config, "passwd", "--name", "nobody", stdin="another long password\n").returncode == 2
    removed = lockergw(config, "remove", "--name", "olive")
    assert removed.returncode == 0 and "Traceback" not in removed.stderr
    assert lockergw(config, "remove", "--name", "olive").stderr.strip() == "lockergw: no user named 'olive'"
    engine = open_database(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(select(console_users)).all() == []
        actions = [(r.actor, r.action) for r in connection.execute(select(audit_log).order_by(audit_log.c.id))]
        hashes = connection.execute(select(audit_log.c.detail)).scalars().all()
    engine.dispose()
    assert actions == [("cli", "user.add"), ("cli", "user.passwd"), ("cli", "user.remove")]
    assert not any("correct horse" in detail for detail in hashes)


def test_a_password_is_never_an_argument(tmp_path: Path) -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "central", "user", "add", "--name", "x", "--role", "viewer",
         "--password", "secret secret"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert answer.returncode == 2 and "unrecognized arguments: --password" in answer.stderr
