"""dialerctl's explain text (``dialerctl explain``) and watch's "why nothing dials" line (``WhyIdle``)."""

from __future__ import annotations

from typing import Any

from dialerd.ctlwatch import WhyIdle, explain_lines, explain_summary

ANSWER: Any = {
    "campaign_id": "cmp_1", "status": "running", "dialling": False, "pending": 5, "eligible_now": 2,
    "blocked_by": [
        {"reason": "pbx_disconnected", "next_at": None, "detail": {"held": "pbx_down", "last_error": None}},
        {"reason": "retry_delay", "contacts": 3, "next_at": "2026-01-02T03:04:05.678Z", "detail": {}},
    ],
}


def test_one_line_per_reason_with_its_count_and_time() -> None:
    assert explain_lines(ANSWER) == [
        "cmp_1 running: not dialling; 5 pending, 2 eligible now",
        "  pbx_disconnected       (held=pbx_down)",
        "  retry_delay            3 contacts until 2026-01-02T03:04:05.678Z",
    ]
    assert explain_summary(ANSWER) == (
        "not dialling: pbx_disconnected, retry_delay 3 until 2026-01-02T03:04:05.678Z (pending 5, eligible 2)"
    )


def test_watch_asks_only_while_running_idle_and_at_most_every_few_seconds() -> None:
    now = [0.0]
    asked: list[float] = []

    def ask() -> Any:
        asked.append(now[0])
        return ANSWER

    why = WhyIdle(ask, every=3.0, clock=lambda: now[0])
    assert why.update("paused", 0) is None and why.update("running", 2) is None and asked == []
    assert why.update("running", 0) == explain_summary(ANSWER)
    now[0] = 2.9
    assert why.update("running", 0) == explain_summary(ANSWER)  # the last answer, not asked again
    now[0] = 3.0
    why.update("running", 0)
    assert asked == [0.0, 3.0]
    dialling = {**ANSWER, "dialling": True}
    why.ask = lambda: dialling
    now[0] = 6.0
    assert why.update("running", 0) is None  # it dials after all: nothing to explain
