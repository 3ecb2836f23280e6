"""The staged shutdown (dialerd/shutdown.py): every stage logged and time-boxed; a failure never skips the rest."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dialerd.shutdown import Stage, run_stages

pytestmark = pytest.mark.timeout(10)


def stage_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "shutdown_stage"]


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def ok(self, name: str) -> Stage:
        async def run() -> None:
            self.ran.append(name)

        return Stage(name, run, 1.0)


async def test_every_stage_runs_in_order_and_is_logged_with_its_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    names = ["stop_originating", "follow_calls", "close_sse", "stop_webhooks", "stop_http", "close_pbx", "close_database"]

    results = await run_stages([rec.ok(n) for n in names], budget=5.0)

    assert rec.ran == names
    assert [r.name for r in results] == names and all(r.ok for r in results)
    logs = stage_logs(caplog)
    assert [r.stage for r in logs] == names  # type: ignore[attr-defined]
    assert all(r.ok is True and isinstance(r.seconds, float) for r in logs)  # type: ignore[attr-defined]


async def test_a_stage_that_raises_is_logged_and_the_later_stages_still_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()

    async def broken() -> None:
        raise ConnectionResetError("pbx went away")

    results = await run_stages(
        [rec.ok("stop_http"), Stage("close_pbx", broken, 1.0), rec.ok("close_database")], budget=5.0
    )

    assert rec.ran == ["stop_http", "close_database"]
    assert [(r.name, r.ok) for r in results] == [("stop_http", True), ("close_pbx", False), ("close_database", True)]
    failed = next(r for r in stage_logs(caplog) if r.stage == "close_pbx")  # type: ignore[attr-defined]
    assert failed.levelno == logging.ERROR and failed.ok is False  # type: ignore[attr-defined]
    assert "ConnectionResetError: pbx went away" in failed.error  # type: ignore[attr-defined]
    assert failed.exc_info is not None  # the traceback is in the log


async def test_a_stage_that_hangs_is_cut_at_its_timeout_and_the_later_stages_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()  # never set
        finally:
            cancelled.set()

    results = await run_stages(
        [Stage("close_pbx", hangs, 0.05), rec.ok("close_database")], budget=5.0
    )

    assert cancelled.is_set()  # the hung stage was cancelled, not left running
    assert rec.ran == ["close_database"]
    assert [(r.name, r.ok) for r in results] == [("close_pbx", False), ("close_database", True)]
    hung = stage_logs(caplog)[0]
    assert hung.stage == "close_pbx" and hung.ok is False  # type: ignore[attr-defined]
    assert "timed out" in hung.error and hung.seconds >= 0.05  # type: ignore[attr-defined]


async def test_one_overall_budget_cuts_a_stage_whose_own_box_is_longer() -> None:
    rec = Recorder()

    async def hangs() -> None:
        await asyncio.Event().wait()

    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await run_stages([Stage("follow_calls", hangs, 60.0), rec.ok("close_database")], budget=0.2)

    assert loop.time() - started < 5.0  # far below the stage's own 60 s box
    assert results[0].ok is False and results[0].error is not None and "timed out" in results[0].error
    assert rec.ran == ["close_database"]  # still tried once the budget is spent


async def test_a_timeout_raised_by_the_stage_itself_is_a_failure_not_its_box() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("ARI request timed out")

    [result] = await run_stages([Stage("close_pbx", own_timeout, 5.0)], budget=10.0)

    assert result.ok is False and result.error == "TimeoutError: ARI request timed out"
