"""A staged shutdown that cannot hang or go silent.

Each stage runs under its own timeout (``asyncio.timeout``), cut to what is left of one overall budget,
and is logged with its duration: ``action: shutdown_stage``, ``stage``, ``seconds``, ``ok`` (and ``error``
when it failed). A stage that raises or runs out of time is logged and the later stages still run, so the
database is closed even when the PBX connection would not close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("dialerd.shutdown")


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[], Awaitable[object]]
    timeout: float  # seconds; cut to the budget left when the stage starts


@dataclass(frozen=True)
class StageResult:
    name: str
    ok: bool
    seconds: float
    error: str | None = None


async def run_stages(
    stages: Sequence[Stage], budget: float, *, clock: Callable[[], float] = time.monotonic
) -> list[StageResult]:
    """Run ``stages`` in order within ``budget`` seconds in all; never raises (but for cancellation)."""
    deadline = clock() + budget
    results: list[StageResult] = []
    for stage in stages:
        # A stage always gets a moment, even past the budget: closing the database must at least be tried.
        limit = max(0.1, min(stage.timeout, deadline - clock()))
        started = clock()
        error: str | None = None
        failure: BaseException | None = None
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                await stage.run()
        except TimeoutError as exc:
            if timer.expired():
                error = f"timed out after {limit:.3g} s"
            else:
                error, failure = f"TimeoutError: {exc}", exc
        except Exception as exc:
            error, failure = f"{type(exc).__name__}: {exc}", exc
        result = StageResult(stage.name, error is None, round(clock() - started, 3), error)
        results.append(result)
        extra: dict[str, object] = {"action": "shutdown_stage", "stage": stage.name, "seconds": result.seconds,
                                    "ok": result.ok}
        if error is None:
            log.info("shutdown stage %s done", stage.name, extra=extra)
        else:
            log.error("shutdown stage %s failed: %s", stage.name, error, exc_info=failure,
                      extra={**extra, "error": error})
    return results
