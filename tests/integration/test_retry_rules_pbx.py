"""Outcome rules for retries against the real Asterisk (issue 11 item 3): a busy line retried exactly the
configured number of times at the configured spacing, measured on Asterisk's clock (its CDR start times),
and an unanswered one not retried because its rule says 0, while the campaign's own budget would allow 5.

The delay is the rules' minimum (60 s) and the count 2, so the test takes a little over two minutes.
"""

from __future__ import annotations

import asyncio
import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.live import all_contacts, live_api, wait_status
from tests.pbx_env import local_pbx_env

pytestmark = pytest.mark.pbx

CDR_START, CDR_DISPOSITION, CDR_UNIQUEID = 9, 14, 16  # Master.csv columns (asterisk/README.md)
BUSY, NO_ANSWER = "+14155550144", "+14155550155"  # carrier rows 40-49 (Busy) and 50-59 (rings on)
RULES = "busy=2@60; no_answer=0@60"
DELAY = 60


async def _cdr_of(channel_ids: set[str]) -> dict[str, list[str]]:
    """The CDR row of each dialer leg, waiting until all are written (at channel destruction)."""
    path = Path(local_pbx_env()["DIALERD_PBX_CDR"])

    def load() -> dict[str, list[str]]:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            return {r[CDR_UNIQUEID]: r for r in csv.reader(fh) if len(r) > CDR_UNIQUEID and r[CDR_UNIQUEID] in channel_ids}

    async def every_row() -> dict[str, list[str]]:
        while True:
            rows = await asyncio.to_thread(load)
            if set(rows) == channel_ids:
                return rows
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(every_row(), 30)


async def test_busy_is_retried_by_its_rule_and_no_answer_not(tmp_path: Path) -> None:
    async with live_api(tmp_path, "ari") as api:
        status, body = await api.create(
            f"phone_number\n{BUSY}\n{NO_ANSWER}\n", caller_id="+14155550000", ring_timeout_seconds=5,
            retries_per_contact=5, retry_delay_seconds=600, retry_rules=RULES,
        )
        assert status == 201, body
        assert body["retry_rules"] == RULES
        cid = body["id"]
        status, body = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        assert status == 200, body
        await wait_status(api, cid, "completed", timeout=240)
        status, page = await api.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history")
        assert status == 200, page
        assert len(await all_contacts(api, cid)) == 2
    contacts: dict[str, dict[str, Any]] = {c["phone_number"]: c for c in page["contacts"]}
    busy, no_answer = contacts[BUSY], contacts[NO_ANSWER]

    # busy=2: the first attempt and exactly two retries, then failed; each attempt's reason listed.
    assert (busy["status"], busy["failure_reason"], busy["attempts"]) == ("failed", "busy", 3), busy
    assert [(a["attempt"], a["outcome"], a["sip_code"]) for a in busy["attempt_history"]] == [
        (1, "busy", 486), (2, "busy", 486), (3, "busy", 486)]
    # no_answer=0: never retried, although retries_per_contact is 5.
    assert (no_answer["status"], no_answer["failure_reason"], no_answer["attempts"]) == ("failed", "no_answer", 1)
    assert [(a["attempt"], a["outcome"]) for a in no_answer["attempt_history"]] == [(1, "no_answer")]

    # Asterisk's own record: one dialer leg per attempt, BUSY, each started DELAY seconds (whole seconds
    # in the CDR, so within one) or a little more after the one before.
    channels = [a["channel_id"] for a in busy["attempt_history"]]
    cdr = await _cdr_of(set(channels))
    assert [cdr[c][CDR_DISPOSITION] for c in channels] == ["BUSY"] * 3
    starts = [datetime.strptime(cdr[c][CDR_START], "%Y-%m-%d %H:%M:%S") for c in channels]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    # The lower bound is the rule (never sooner); the upper one says the retry came when due, not
    # at retry_delay_seconds (600) or later: the dispatcher wakes for the next due retry.
    assert all(DELAY - 1 <= g <= DELAY + 15 for g in gaps), gaps
    # dialerd's own times agree: each retry was due DELAY seconds after the previous attempt ended.
    for before, after in zip(busy["attempt_history"], busy["attempt_history"][1:], strict=False):
        ended = datetime.fromisoformat(before["ended_at"])
        started = datetime.fromisoformat(after["started_at"])
        assert (started - ended).total_seconds() >= DELAY, (before, after)
