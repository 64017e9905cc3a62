"""Visitor and contractor codes: issued by `lockergw credentials visitor`, shown as a QR code, read by a
QR scanner on a serial-ascii reader in text mode or typed on an OSDP keypad, single-use codes used up
by the tap that uses them (journaled), expired codes refused."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import png
import pytest
from gateway_world import running, write_site
from hypothesis import given
from hypothesis import strategies as st
from policy_world import NOW, credential, run, snapshot

from drivers.serial_ascii import FrameError, format_line, parse_line
from gateway.cli import main
from gateway.journal import Journal, StateWrite
from gateway.model import Kind, Status
from gateway.policy import Reason
from gateway.store import Store
from gateway.visitors import (
    CODE_DIGITS,
    USED_UP_PREFIX,
    VisitorError,
    code_of_entry,
    grouped,
    new_code,
    parse_validity,
)
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(90)

# ---- codes, durations, the text mode: pure --------------------------------------------------------


@given(st.integers(0, 100))
def test_codes_are_twelve_digits_and_a_keypad_entry_of_one_is_a_code(_: int) -> None:
    code = new_code()
    assert len(code) == CODE_DIGITS and code.isdigit()
    assert code_of_entry(code) == code == code_of_entry(code + "#")
    assert grouped(code).replace(" ", "") == code


@pytest.mark.parametrize("entry", ["3", "03", "12345678901", "1234567890123", "12345678901A", ""])
def test_other_keypad_entries_are_not_codes(entry: str) -> None:
    assert code_of_entry(entry) is None


@given(st.lists(st.tuples(st.integers(0, 99), st.sampled_from("dhm")), min_size=1, max_size=3))
def test_validity_parses_what_it_says(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    unit = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
    expected = sum((unit[u] * n for n, u in parts), timedelta())
    if timedelta(minutes=1) <= expected <= timedelta(days=14):
        assert parse_validity(text) == expected
    else:
        with pytest.raises(VisitorError):
            parse_validity(text)


@pytest.mark.parametrize("text", ["", "4", "h", "4x", "four hours", "-4h", "4h-"])
def test_a_bad_validity_is_refused(text: str) -> None:
    with pytest.raises(VisitorError, match="--valid-for"):
        parse_validity(text)


def test_the_text_mode_takes_codes_verbatim_and_refuses_anything_else() -> None:
    assert parse_line("123456789012", "text") == "123456789012"  # in "decimal" it would become hex
    assert parse_line(" 0012 3456 7890 ", "text") == "001234567890"
    for text in ("https://example.org/x", "hello", "12-34", "3C00CE754C", "123456"):  # a card's number is no code
        with pytest.raises(FrameError):
            parse_line(text, "text")


@given(st.text(alphabet="0123456789", min_size=1, max_size=40))
def test_the_text_mode_takes_exactly_a_codes_digits(digits: str) -> None:
    if len(digits) == CODE_DIGITS:
        assert parse_line(format_line(digits, "text").decode().strip(), "text") == digits
    else:  # a 6-, 8- or 10-digit line would be a Wiegand or EM4100 number: a QR code never stands in for a card
        with pytest.raises(FrameError):
            parse_line(digits, "text")


# ---- the rules --------------------------------------------------------------------------------------


def test_a_single_use_code_at_its_locker_is_used_up_by_the_opening() -> None:
    code = credential("V-1", scope=("A-01",), kind=Kind.MOBILE, single_use=True, uid="123456789012")
    decision, snap = run(snapshot([code]), code, "door-a01")
    assert (decision.reason, decision.used_up) == (Reason.ASSIGNED_LOCKER, "V-1")
    again, _ = run(replace(snap, used_up=frozenset({"V-1"})), code, "door-a01")
    assert (again.granted, again.reason) == (False, Reason.CREDENTIAL_REVOKED)
    many = replace(code, single_use=False)
    assert run(snapshot([many]), many, "door-a01")[0].used_up is None


def test_at_a_shared_bank_the_code_is_used_up_when_the_visitor_takes_their_things_back() -> None:
    code = credential("V-2", scope=("S-9", "S-10"), kind=Kind.MOBILE, single_use=True, uid="123456789012")
    stored, snap = run(snapshot([code]), code, "bank-s")
    assert (stored.reason, stored.lockers, stored.used_up) == (Reason.SHARED_ALLOCATED, ("S-9",), None)
    back, _ = run(snap, code, "bank-s", NOW + timedelta(hours=1))
    assert (back.reason, back.lockers, back.used_up) == (Reason.SHARED_REOPEN, ("S-9",), "V-2")


def test_a_code_is_bound_to_its_scope_at_a_shared_bank_and_a_card_is_not() -> None:
    code = credential("V-3", scope=("S-10",), kind=Kind.MOBILE, uid="123456789012")
    card = credential("C-3", scope=("S-10",))
    decision, _ = run(snapshot([code]), code, "bank-s")
    assert decision.lockers == ("S-10",)  # not the lowest-numbered free one, S-2
    assert run(snapshot([card]), card, "bank-s")[0].lockers == ("S-2",)
    elsewhere = credential("V-4", scope=("A-01",), kind=Kind.MOBILE, uid="223456789012")
    assert run(snapshot([elsewhere]), elsewhere, "bank-s")[0].reason == Reason.NO_LOCKER_HERE


def test_an_expired_code_is_refused_expired() -> None:
    code = credential("V-5", scope=("A-01",), kind=Kind.MOBILE, uid="123456789012", valid_until=NOW)
    assert run(snapshot([code]), code, "door-a01")[0].reason == Reason.EXPIRED


@given(
    st.sampled_from([("A-01",), ("S-9", "S-10")]),
    st.lists(st.tuples(st.sampled_from(["door-a01", "bank-a", "bank-s", "lobby"]), st.integers(0, 3600)), max_size=12),
)
def test_a_single_use_code_completes_one_use_and_then_opens_nothing(
    scope: tuple[str, ...], taps: list[tuple[str, int]]
) -> None:
    """Whatever is tapped where: at most one decision uses the code up, and nothing opens after it."""
    code = credential("V-7", scope=scope, kind=Kind.MOBILE, single_use=True, uid="123456789012")
    snap = snapshot([code])
    used = False
    for reader, seconds in sorted(taps, key=lambda t: t[1]):
        decision, snap = run(snap, code, reader, NOW + timedelta(seconds=seconds))
        assert not (used and decision.granted)
        if decision.used_up is not None:
            assert decision.granted and not used
            used = True
            snap = replace(snap, used_up=frozenset({"V-7"}))  # what the daemon does on commit
        assert set(decision.lockers) <= set(scope) or not decision.granted


# ---- the CLI ----------------------------------------------------------------------------------------

VISITOR_LINE = re.compile(r"visitor code (\S+) for (.+): (\d{4} \d{4} \d{4})")


def issue(config: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["credentials", "visitor", "--config", str(config), *args])
    return code, out.getvalue()


def issued(output: str) -> tuple[str, str]:
    match = VISITOR_LINE.search(output)
    assert match is not None, output
    return match.group(1), match.group(3).replace(" ", "")


def test_visitor_prints_the_code_and_a_qr_code_and_writes_a_png(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    status, output = issue(
        config, "--holder", "Dana (contractor)", "--locker", "A-03", "--valid-for", "4h", "--single-use", "--png",
        str(tmp_path / "code.png"),
    )  # fmt: skip
    assert status == 0
    ident, code = issued(output)
    assert "single use" in output and "▀" in output  # the QR code, drawn in block characters
    width, height, _, info = png.Reader(filename=str(tmp_path / "code.png")).read()
    assert width == height and width > 100 and info["greyscale"]
    assert (tmp_path / "code.png").stat().st_mode & 0o777 == 0o600  # it opens a locker, like a key file
    assert re.search(r"valid until \d{4}-\d{2}-\d{2} \d{2}:\d{2}[+-]\d{2}:\d{2}, single use", output)
    with Store.open(settings.gateway.state_dir) as store:
        stored = store.get(ident)
    assert stored is not None and stored.uid == code
    assert (stored.kind, stored.scope, stored.single_use, stored.role.value) == (Kind.MOBILE, ("A-03",), True, "user")
    assert stored.valid_until is not None and stored.valid_from is not None
    assert stored.valid_until - stored.valid_from == timedelta(hours=4)


def test_a_bank_code_is_bound_to_the_banks_shared_lockers(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    status, output = issue(config, "--holder", "guest", "--bank", "door-b", "--valid-for", "1d")
    assert status == 0
    ident, _ = issued(output)
    with Store.open(settings.gateway.state_dir) as store:
        stored = store.get(ident)
    assert stored is not None and stored.scope == ("B-01", "B-02") and not stored.single_use


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holder", "x", "--locker", "Z-99"], "no locker 'Z-99'"),
        (["--holder", "x", "--bank", "bank-a"], "serves no shared lockers"),
        (["--holder", "x", "--bank", "nosuch"], "no reader 'nosuch'"),
        (["--holder", "x", "--locker", "A-01", "--valid-for", "30d"], "between 1 minute and 14 days"),
        (["--holder", "x", "--locker", "A-01", "--png", "/nonexistent/dir/q.png"], "--png"),
    ],
)
def test_visitor_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config, _ = write_site(tmp_path)
    status, _ = issue(config, *args)
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


# ---- end to end: the real daemon, a QR scanner and an OSDP keypad ------------------------------------

QR_AND_KEYPAD = """
[[readers]]
id = "qr-a"
driver = "serial-ascii"
format = "text"
port = "{root}/dev/qr-a"
lockers = ["A-01", "A-03"]

[[readers]]
id = "keypad-a"
driver = "osdp"
port = "{root}/dev/keypad-a"
lockers = ["A-01", "A-03"]
"""


async def test_a_single_use_code_opens_once_by_qr_and_is_refused_revoked_after(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, extra=QR_AND_KEYPAD.format(root=tmp_path))
    status, output = issue(config, "--holder", "dana", "--locker", "A-03", "--single-use")
    assert status == 0
    ident, code = issued(output)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="qr-a")
        await gw.wait_for("board.online", board="board-a")
        await site.tap("qr-a", code)
        granted = await gw.wait_for("access.granted", reader="qr-a")
        assert (granted["locker"], granted["unlock"], granted["used_up"]) == ("A-03", "sent", True)
        assert granted["credential"]["id"] == ident and code not in str(granted)
        revoked = await gw.wait_for("credentials.changed", reason="single_use")
        assert (revoked["action"], revoked["ids"], revoked["by"]) == ("set_status", [ident], "gateway")
        mark = len(gw.events)
        await asyncio.sleep(0.6)  # the same code shown again is a new presentation after repeat_gap_s
        await site.tap("qr-a", code)
        refused = await gw.wait_for("access.denied", since=mark, reader="qr-a")
        assert refused["reason"] == "credential_revoked"
        assert all(code not in line for line in gw.lines)  # the code itself is never logged
    with Store.open(settings.gateway.state_dir) as store:
        stored = store.get(ident)
    assert stored is not None and stored.status == Status.REVOKED


async def test_a_code_typed_on_an_osdp_keypad_opens_and_an_expired_one_is_refused(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, extra=QR_AND_KEYPAD.format(root=tmp_path))
    status, output = issue(config, "--holder", "eve", "--locker", "A-01", "--valid-for", "2h")
    assert status == 0
    ident, code = issued(output)
    past = datetime.now(UTC) - timedelta(days=1)
    with Store.open(settings.gateway.state_dir) as store:
        old = {"id": "V-OLD", "uid": "987654321098", "holder": "frank", "role": "user", "kind": "mobile"}
        until = (past + timedelta(hours=4)).isoformat()
        store.upsert(
            [{**old, "scope": ["A-03"], "valid_from": past.isoformat(), "valid_until": until}], by="t", now=past
        )
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="keypad-a")
        await gw.wait_for("board.online", board="board-a")
        await site.keypad("keypad-a", code)
        granted = await gw.wait_for("access.granted", reader="keypad-a")
        assert (granted["locker"], granted["credential"]["id"], granted["unlock"]) == ("A-01", ident, "sent")
        assert "used_up" not in granted  # not single-use: it opens again within its validity
        await site.keypad("keypad-a", "987654321098")
        refused = await gw.wait_for("access.denied", reader="keypad-a")
        assert (refused["reason"], refused["credential"]["id"]) == ("expired", "V-OLD")


async def test_a_use_committed_before_a_crash_is_revoked_at_the_next_start(tmp_path: Path) -> None:
    """The grant's journal commit records the use; if the gateway died before the store had the
    revocation, the next start finishes it (and the code never opens again meanwhile)."""
    config, settings = write_site(tmp_path, extra=QR_AND_KEYPAD.format(root=tmp_path))
    state_dir = settings.gateway.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    code = {"id": "V-9", "uid": "112233445566", "holder": "gil", "role": "user", "kind": "mobile", "scope": ["A-01"]}
    with Store.open(state_dir) as store:
        store.upsert([{**code, "single_use": True}], by="test", now=now)
    with Journal.open(state_dir, site="test-site", gateway="gw-e2e", boot_id="crashed") as journal:
        journal.put_state([StateWrite(f"{USED_UP_PREFIX}V-9", {"at": "2026-11-30T10:00:00Z"})])
    async with SimulatedSite(settings) as site, running(config) as gw:
        revoked = await gw.wait_for("credentials.changed", reason="single_use")
        assert revoked["ids"] == ["V-9"]
        await gw.wait_for("reader.online", reader="qr-a")
        await site.tap("qr-a", "112233445566")
        refused = await gw.wait_for("access.denied", reader="qr-a")
        assert refused["reason"] == "credential_revoked"
    with Journal.open(state_dir, site="test-site", gateway="gw-e2e", boot_id="after") as journal:
        assert journal.get_state(USED_UP_PREFIX) == {}  # done: nothing left to finish
