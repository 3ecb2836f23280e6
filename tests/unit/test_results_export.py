"""The results export's pure parts: one neutralising rule for both CSVs, the columns and cells of a contact's
line, and which campaign statuses take appended contacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialerd import ctl
from dialerd.api.campaigns import _accept_q
from dialerd.domain import cells
from dialerd.domain.campaign import ACCEPTS_CONTACTS, CampaignStatus, append_refused
from dialerd.services import results
from dialerd.store.repo import ContactResult


def test_dialerctl_and_the_daemon_share_one_rule() -> None:
    assert ctl.safe_cell is cells.safe_cell
    assert cells.safe_cell(None) == "" and cells.safe_cell(17) == "17"


def test_a_contact_line_in_column_order_with_custom_fields_after() -> None:
    assert results.header(["first_name", "status"]) == [*results.RESULT_COLUMNS, "first_name", "custom.status"]
    result = ContactResult(
        id=3, phone_e164="+14155550142", status="failed", reason="busy", attempts=2,
        last_attempt_at=datetime(2030, 1, 31, 9, 0, 0, 250000, tzinfo=UTC), hangup_cause=17, sip_code=486,
        fields={"first_name": "=1+1"}, answered_by="human", talk_seconds=12.5, caller_id="+14155550001",
    )
    assert results.row(result, ["first_name", "status"]) == [
        "+14155550142", "failed", "busy", "2", "2030-01-31T09:00:00.250Z", "human", "17", "486", "12.5",
        "+14155550001", "=1+1", ""]
    line = results._Lines().encode([results.row(result, ["first_name"])])
    assert line.endswith(b'"+14155550001","\'=1+1"\r\n')  # neutralised and quoted on the way out


def test_talk_seconds_are_short_and_absent_ones_empty() -> None:
    assert results._talk(None) == "" and results._talk(3.0) == "3" and results._talk(1.23456) == "1.235"


@pytest.mark.parametrize(("accept", "csv_q", "json_q"), [
    ("text/csv", 1.0, None), ("application/json", None, 1.0), ("text/csv;q=0.4, application/json;q=0.9", 0.4, 0.9),
    ("TEXT/CSV ; q=0.7", 0.7, None), ("text/csv;q=x", 0.0, None), ("*/*", None, None),
])  # fmt: skip
def test_accept_qualities(accept: str, csv_q: float | None, json_q: float | None) -> None:
    assert _accept_q(accept, "text/csv") == csv_q and _accept_q(accept, "application/json") == json_q


def test_append_is_refused_once_over() -> None:
    for status in CampaignStatus:
        refused = append_refused(status)
        assert (refused is None) == (status in ACCEPTS_CONTACTS), status
    assert "create a new campaign" in (append_refused(CampaignStatus.COMPLETED) or "")
    assert append_refused(CampaignStatus.IMPORTING) is not None


def test_a_lines_cells_follow_the_one_rule() -> None:
    line = ["", "+14155550142", "=1", "\tx", "plain", "+1 415", "＠x"]
    assert cells.safe_cells(line) == [cells.safe_cell(v) for v in line]
