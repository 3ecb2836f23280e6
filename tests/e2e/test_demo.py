"""``make demo`` as a user runs it: ``examples/demo.py`` against the real local Asterisk.

The demo is run once for the module; its last line (``SUMMARY {json}``) is checked against what the
simulated carrier's outcome table (``asterisk/README.md``) predicts for ``examples/contacts.csv``. The
expectation is derived from the CSV here, so editing the example file keeps this test honest.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.py"
CONTACTS = REPO / "examples" / "contacts.csv"
DEMO_TIMEOUT = 240.0

# The outcome table of asterisk/README.md, by the last two digits of +1 NXX 555-01XX:
# (contact status, failure reason, Q.850 cause, SIP code; None where the table gives no final SIP failure).
CARRIER: list[tuple[range, tuple[str, str | None, int, int | None]]] = [
    (range(0, 30), ("completed", None, 16, None)),  # answers, ~2 s
    (range(30, 40), ("completed", None, 16, None)),  # answers, ~20 s
    (range(40, 50), ("failed", "busy", 17, 486)),
    (range(50, 60), ("failed", "no_answer", 19, None)),  # rings; the ring timeout ends it (480 synthesised)
    (range(60, 70), ("failed", "congestion", 34, 503)),
    (range(70, 80), ("failed", "invalid_number", 1, 404)),
    (range(80, 90), ("failed", "rejected", 21, 603)),
    (range(90, 100), ("completed", None, 16, None)),  # rings 3 s, then answers
]
FICTIONAL = re.compile(r"^\+1\d{3}55501(\d\d)$")


@dataclass
class Expected:
    rows_total: int
    duplicates: int
    rejected_lines: list[int]
    outcomes: dict[str, tuple[str, str | None, int, int | None]]  # E.164 -> carrier row
    long_calls: list[str]  # numbers the far end keeps up for ~20 s


def expected_from_csv() -> Expected:
    rows_total = duplicates = 0
    rejected: list[int] = []
    seen: dict[str, tuple[str, str | None, int, int | None]] = {}
    long_calls: list[str] = []
    with CONTACTS.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            rows_total += 1
            raw = row["phone_number"].strip()
            if re.search(r"[A-Za-z]", raw):
                rejected.append(reader.line_num)
                continue
            e164 = phonenumbers.format_number(phonenumbers.parse(raw, "US"), phonenumbers.PhoneNumberFormat.E164)
            match = FICTIONAL.match(e164)
            assert match, f"{CONTACTS.name} line {reader.line_num}: {raw} is not a +1 NXX 555-01XX test number"
            if e164 in seen:
                duplicates += 1
                continue
            last = int(match.group(1))
            seen[e164] = next(outcome for digits, outcome in CARRIER if last in digits)
            if last in range(30, 40):
                long_calls.append(e164)
    return Expected(rows_total, duplicates, rejected, seen, long_calls)


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]

    def context(self) -> str:
        return f"exit {self.returncode}\n--- stdout (end) ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-3000:]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """Run the demo once, with its own state directory so a developer's .venv/demo is left alone."""
    state = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
    done = subprocess.run(
        [sys.executable, str(DEMO), "--state-dir", str(state)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("SUMMARY ")]
    summary = json.loads(lines[-1].removeprefix("SUMMARY ")) if lines else {}
    return DemoRun(done.returncode, done.stdout, done.stderr, summary)


@pytest.fixture(scope="module")
def expected() -> Expected:
    return expected_from_csv()


def test_demo_exits_0_after_the_end_of_the_stream(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.context()
    assert demo.summary, f"no SUMMARY line\n{demo.context()}"
    # The raw SSE is on screen: the first frames verbatim, and the frame that ends the stream.
    assert "retry: 2000" in demo.stdout
    assert "\nevent: end\n" in demo.stdout, demo.context()
    assert "curl -N -H 'Last-Event-ID: 0'" in demo.stdout
    end = demo.summary["stream_end"]  # the stored end event: its id and time beside campaign and status
    assert {k: end[k] for k in ("campaign_id", "status")} == {"campaign_id": demo.summary["campaign_id"],
                                                               "status": "completed"}, end
    assert isinstance(end["id"], int) and end["at"].endswith("Z"), end
    assert demo.summary["status"] == "completed"
    assert demo.summary["daemon_exit"] == 0
    assert demo.summary["wall_seconds"] < 120


def test_import_report_shows_the_bad_row_and_the_duplicate(demo: DemoRun, expected: Expected) -> None:
    assert demo.summary, demo.context()
    report = demo.summary["import"]
    assert report["rows_total"] == expected.rows_total
    assert report["duplicates"] == expected.duplicates == 1
    assert report["contacts"] == len(expected.outcomes)
    assert [(p["line"], p["code"]) for p in report["rejected"]] == [(n, "not_a_number") for n in expected.rejected_lines]
    for line in expected.rejected_lines:
        assert re.search(rf"rejected line {line}: .*letters", demo.stdout), demo.context()


def test_every_contact_ends_as_the_carrier_table_says(demo: DemoRun, expected: Expected) -> None:
    assert demo.summary, demo.context()
    got = demo.summary["contacts"]
    assert sorted(got) == sorted(expected.outcomes)
    for number, (status, reason, cause, sip) in expected.outcomes.items():
        c = got[number]
        assert (c["status"], c["reason"], c["cause"], c["attempts"]) == (status, reason, cause, 1), (number, c)
        if sip is not None:
            assert c["sip_code"] == sip, (number, c)
        if status == "completed":
            assert c["talk_seconds"] is not None and c["talk_seconds"] > 0, (number, c)
    for number in expected.long_calls:
        assert got[number]["talk_seconds"] >= 15, (number, got[number])


def test_counts_and_failure_reasons_add_up(demo: DemoRun, expected: Expected) -> None:
    assert demo.summary, demo.context()
    statuses = Counter(status for status, *_ in expected.outcomes.values())
    reasons = Counter(reason for _, reason, *_ in expected.outcomes.values() if reason)
    counts = demo.summary["counts"]
    assert counts["total"] == len(expected.outcomes)
    assert (counts["completed"], counts["failed"]) == (statuses["completed"], statuses["failed"])
    assert counts["pending"] == counts["originated"] == counts["connected"] == counts["cancelled"] == 0
    assert demo.summary["failures"] == dict(reasons)
    # Every contact was dialled once and each transition reached the stream.
    events = demo.summary["events"]
    assert events["originated"] == len(expected.outcomes)
    assert events["completed"] == statuses["completed"] and events["failed"] == statuses["failed"]
    assert events["end"] == 1 and events["snapshot"] >= 1
    assert f"campaign completed: {statuses['completed']} completed, {statuses['failed']} failed" in demo.stdout
