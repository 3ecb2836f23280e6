"""TaskOwner: one owner for every task and timer, one crash policy (dialerd/tasks.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from dialerd.tasks import TaskOwner, child_of

pytestmark = pytest.mark.timeout(10)


class Crashes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.event = asyncio.Event()

    def __call__(self, name: str, exc: BaseException) -> None:
        self.seen.append((name, str(exc)))
        self.event.set()


async def boom(message: str = "boom") -> None:
    await asyncio.sleep(0)
    raise RuntimeError(message)


def crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "task_crash"]


async def test_spawn_names_the_task_and_keeps_it_until_it_ends() -> None:
    owner = TaskOwner()
    gate = asyncio.Event()

    async def wait() -> int:
        await gate.wait()
        return 7

    task = owner.spawn("waiter", wait(), critical=True)

    assert task.get_name() == "waiter"
    assert owner.names() == ["waiter"]
    gate.set()
    assert await task == 7
    await asyncio.sleep(0)  # the done callback runs on the next turn
    assert owner.names() == []


async def test_a_critical_crash_is_logged_with_its_name_and_stops_the_daemon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashes = Crashes()
    owner = TaskOwner(on_crash=crashes)

    owner.spawn("campaign-x", boom("injected"), critical=True)
    await asyncio.wait_for(crashes.event.wait(), 5)

    assert crashes.seen == [("campaign-x", "injected")]
    assert owner.crashed == ["campaign-x"]
    [record] = crash_records(caplog)
    assert record.levelno == logging.CRITICAL
    assert record.task == "campaign-x"  # type: ignore[attr-defined]
    assert record.critical is True  # type: ignore[attr-defined]
    assert record.exc_info is not None and "injected" in str(record.exc_info[1])


async def test_a_non_critical_crash_is_logged_and_the_daemon_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    crashes = Crashes()
    owner = TaskOwner(on_crash=crashes)

    task = owner.spawn("ari-route-1", boom(), critical=False)
    await asyncio.wait([task])
    await asyncio.sleep(0)

    assert crashes.seen == []
    assert owner.crashed == []
    [record] = crash_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.task == "ari-route-1"  # type: ignore[attr-defined]
    assert record.critical is False  # type: ignore[attr-defined]


async def test_cancellation_and_a_clean_end_are_not_crashes(caplog: pytest.LogCaptureFixture) -> None:
    crashes = Crashes()
    owner = TaskOwner(on_crash=crashes)
    sleeper = owner.spawn("sleeper", asyncio.sleep(30), critical=True)
    quick = owner.spawn("quick", asyncio.sleep(0), critical=True)

    await quick
    sleeper.cancel()
    await asyncio.wait([sleeper])
    await asyncio.sleep(0)

    assert crashes.seen == [] and crash_records(caplog) == []


async def test_spawn_later_starts_the_task_after_the_delay() -> None:
    owner = TaskOwner()
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    owner.spawn_later("reconcile-c1", 0.01, work, critical=True)

    await asyncio.wait_for(ran.wait(), 5)


async def test_a_timer_cancelled_before_it_fires_never_creates_its_coroutine() -> None:
    owner = TaskOwner()
    made: list[str] = []

    async def work() -> None:
        made.append("ran")

    def factory() -> Coroutine[Any, Any, None]:
        made.append("made")
        return work()

    owner.spawn_later("late", 0.05, factory, critical=True)
    owner.call_later("late-cb", 0.05, lambda: made.append("callback"), critical=False)
    assert await owner.cancel_all(1.0) == []
    await asyncio.sleep(0.1)

    assert made == []  # neither the timer's task nor the plain callback ran after cancel_all


async def test_a_timer_callback_that_raises_follows_the_policy() -> None:
    crashes = Crashes()
    owner = TaskOwner(on_crash=crashes)

    def fail() -> None:
        raise ValueError("late failure")

    owner.call_later("ami-no-channel-x", 0.0, fail, critical=True)
    await asyncio.wait_for(crashes.event.wait(), 5)

    assert crashes.seen == [("ami-no-channel-x", "late failure")]


async def test_cancel_all_cancels_every_task_and_returns_those_that_would_not_end() -> None:
    owner = TaskOwner()
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue  # ignores cancellation (a bug the timeout must survive)

    plain = owner.spawn("plain", asyncio.sleep(30), critical=True)
    owner.spawn("stubborn", stubborn(), critical=True)
    await started.wait()

    late = await owner.cancel_all(0.05)

    assert plain.cancelled()
    assert late == ["stubborn"]
    release.set()
    await owner.cancel_all(1.0)


async def test_a_child_shares_the_policy_cancels_its_own_and_the_root_cancels_it_too() -> None:
    crashes = Crashes()
    root = TaskOwner(on_crash=crashes)
    pbx = root.child("pbx")
    root_task = root.spawn("dispatcher-events", asyncio.sleep(30), critical=True)
    pbx_task = pbx.spawn("ari-reconcile", asyncio.sleep(30), critical=False)
    pbx.spawn("ari-events-x", boom("socket loop"), critical=True)
    await asyncio.wait_for(crashes.event.wait(), 5)

    assert crashes.seen == [("ari-events-x", "socket loop")]
    assert root.crashed == ["ari-events-x"]  # one record for the whole daemon
    assert root.names() == ["ari-reconcile", "dispatcher-events"]

    await pbx.cancel_all(1.0)
    assert pbx_task.cancelled() and not root_task.done()

    again = pbx.spawn("ari-owner", asyncio.sleep(30), critical=False)
    await root.cancel_all(1.0)
    assert root_task.cancelled() and again.cancelled()


async def test_child_of_none_is_a_standalone_log_only_owner(caplog: pytest.LogCaptureFixture) -> None:
    owner = child_of(None, "fake-pbx")
    task = owner.spawn("fake-call-1", boom(), critical=True)
    await asyncio.wait([task])
    await asyncio.sleep(0)

    assert owner.crashed == ["fake-call-1"]
    assert [r.task for r in crash_records(caplog)] == ["fake-call-1"]  # type: ignore[attr-defined]
