"""Suppression lists against the real local Asterisk, through ARI and AMI (issue 11 item 2):

- a number on the tenant's list is imported as skipped and never originated (Asterisk's own channel list
  never shows a channel for it);
- the simulated carrier's 555-0200..0209 range answers and presses 9 in [dialerd-demo]: the channel ends
  with DIALERD_OPT_OUT=1 and the number joins the tenant's list as an opt_out, with the call's end;
- after DELETE the number is dialled again by a new campaign.
On SQLite (the sqlite3-driver call store) and PostgreSQL (SQLAlchemy's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.live import AsteriskWatch, all_contacts, live_api, wait_status

pytestmark = pytest.mark.pbx

SUPPRESSED = "+14155550105"  # answers 2 s, if it were ever dialled
OPT_OUT = "+14155550203"  # answers, DTMF 9 after 1 s, hangs up ~3 s
PLAIN = "+14155550106"


async def _run(api: Api, csv: str) -> tuple[str, dict[str, Any]]:
    status, body = await api.create(csv, max_concurrent_calls=3, caller_id="+14155550000")
    assert status == 201, body
    cid = str(body["id"])
    status, started = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
    assert status == 200, started
    return cid, body


async def _entry(api: Api, number: str) -> dict[str, Any] | None:
    status, page = await api.call("GET", "/api/v1/suppressions", params={"number": number})
    assert status == 200, page
    return page["suppressions"][0] if page["suppressions"] else None


@pytest.mark.parametrize("driver", ["ari", "ami"])
async def test_suppressed_never_dialled_opt_out_listed_and_redialled_after_delete(tmp_path: Path, driver: str,
                                                                                  db_url: str) -> None:
    watch = AsteriskWatch.from_env()
    async with live_api(tmp_path, driver, db_url=db_url) as api:
        status, added = await api.call("POST", "/api/v1/suppressions", json={"numbers": [SUPPRESSED],
                                                                              "reason": "asked"})
        assert status == 200 and added["added"] == 1, added
        watch.start()
        try:
            first, created = await _run(api, f"phone_number\n{SUPPRESSED}\n{OPT_OUT}\n{PLAIN}\n")
            assert created["import"]["suppressed"] == 1
            final = await wait_status(api, first, "completed", timeout=60)
            contacts = {c["phone_number"]: c for c in await all_contacts(api, first)}
            # The opt-out is written with the call's end: listed once the campaign is over.
            opted = await _entry(api, OPT_OUT)
            # A new campaign skips the opted-out number; after DELETE another one dials it again.
            status, skipping = await api.create(f"phone_number\n{OPT_OUT}\n")
            assert status == 201 and skipping["import"]["suppressed"] == 1, skipping
            status, _ = await api.call("DELETE", "/api/v1/suppressions/%2B14155550203")
            assert status == 204
            assert await _entry(api, OPT_OUT) is None
            again, created_again = await _run(api, f"phone_number\n{OPT_OUT}\n")
            assert created_again["import"]["suppressed"] == 0
            final_again = await wait_status(api, again, "completed", timeout=60)
            [redialled] = await all_contacts(api, again)
            relisted = await _entry(api, OPT_OUT)
        finally:
            await watch.stop()
    assert (final["contacts"]["skipped"], final["contacts"]["completed"]) == (1, 2), final
    assert (contacts[SUPPRESSED]["status"], contacts[SUPPRESSED]["reason"]) == ("skipped", "suppressed")
    assert contacts[SUPPRESSED]["attempts"] == 0
    assert contacts[OPT_OUT]["status"] == contacts[PLAIN]["status"] == "completed"
    # Asterisk's own channel list: two dialer channels for the first campaign (never one for SUPPRESSED).
    assert len(watch.start_times(first)) == 2, watch.seen
    assert watch.polls > 10
    assert opted is not None and (opted["source"], opted["reason"]) == ("opt_out", "opt-out during call")
    assert final_again["contacts"]["completed"] == 1 and redialled["attempts"] == 1
    assert len(watch.start_times(again)) == 1
    assert relisted is not None and relisted["source"] == "opt_out"  # it opted out again
