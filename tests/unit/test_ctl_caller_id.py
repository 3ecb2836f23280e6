"""dialerctl and caller-id pools: --caller-id-strategy on create, the per number figures in `campaigns get`."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dialerd.ctl import build_parser, show

CAMPAIGN: dict[str, Any] = {
    "id": "cmp_4f9d2c6e0a1b3c5d7e9f", "name": "spring", "status": "running", "progress": 0.5, "calls_in_flight": 1,
    "contacts": {"total": 4, "pending": 1, "completed": 2, "failed": 1}, "caller_id": "+12125550100,+13125550100",
    "caller_id_strategy": "local_presence", "destination": "dialerd-demo,s,1", "max_concurrent_calls": 5,
    "retries_per_contact": 0, "retry_delay_seconds": 300, "retry_rules": "", "ring_timeout_seconds": 30,
    "scheduled_at": None, "created_at": "2026-01-02T03:04:05.678Z", "started_at": None, "completed_at": None,
    "caller_id_stats": [
        {"caller_id": "+12125550100", "attempts": 3, "answered": 2, "answer_rate": 0.6667, "rejected": 1},
        {"caller_id": "+13125550100", "attempts": 0, "answered": 0, "answer_rate": None, "rejected": 0},
    ],
}  # fmt: skip


def test_get_prints_the_strategy_and_a_line_per_caller_id() -> None:
    out = io.StringIO()
    show(CAMPAIGN, out)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert "caller id strategy    local_presence" in lines
    table = lines[lines.index("caller ids:") + 1:]
    assert table[0].split() == ["CALLER", "ID", "ATTEMPTS", "ANSWERED", "ANSWER", "RATE", "REJECTED"]
    assert table[1].split() == ["+12125550100", "3", "2", "67%", "1"]
    assert table[2].split() == ["+13125550100", "0", "0", "-", "0"]


def test_create_takes_the_strategy_and_refuses_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["campaigns", "create", "c.csv", "--name", "n", "--caller-id", "+1,+2",
                                      "--caller-id-strategy", "local_presence"])
    assert (args.caller_id, args.caller_id_strategy) == ("+1,+2", "local_presence")
    assert build_parser().parse_args(["campaigns", "create", "c.csv", "--name", "n"]).caller_id_strategy is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["campaigns", "create", "c.csv", "--name", "n", "--caller-id-strategy", "near"])
    assert "invalid choice" in capsys.readouterr().err
