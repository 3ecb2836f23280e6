"""The in-flight ledger under the real dispatcher and follower: the fake PBX, a real SQLite store.

The dispatcher reserves a slot per call, the follower frees it when the call's end is recorded, and
a freed slot wakes the runners that can use it (a runner at its campaign's cap otherwise sleeps 5 s).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dialerd.domain.campaign import CampaignAction, CampaignStatus
from dialerd.pbx.fake import FakeOutcome, FakePbx
from dialerd.services.auth import create_key
from dialerd.services.dispatcher import Dispatcher
from dialerd.services.lifecycle import CampaignLifecycle, CampaignTransitions
from dialerd.services.slots import Slots
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.tables import Campaign
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow

pytestmark = pytest.mark.timeout(30)

TALK = FakeOutcome(talk=300.0)  # x time_scale 0.001: each call is up 0.3 s


@dataclass
class Rig:
    store: Store
    pbx: FakePbx
    slots: Slots
    dispatcher: Dispatcher
    lifecycle: CampaignLifecycle
    crashed: list[str]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await migrate(engine)
    store = Store(engine)
    crashed: list[str] = []
    tasks = TaskOwner(on_crash=lambda name, _exc: crashed.append(name))
    pbx = FakePbx(tasks=tasks)
    slots = Slots(store)
    transitions = CampaignTransitions(store)
    dispatcher = Dispatcher(store, pbx, slots, transitions, tasks=tasks)
    lifecycle = CampaignLifecycle(transitions, dispatcher)
    await dispatcher.start()
    try:
        yield Rig(store, pbx, slots, dispatcher, lifecycle, crashed)
    finally:
        await dispatcher.stop_originating()
        await dispatcher.close()
        await tasks.cancel_all(3.0)
        await store.close()


async def _campaign(store: Store, tenant_id: str, numbers: list[str], max_concurrent_calls: int) -> str:
    now = utcnow()
    cid = "cmp_" + secrets.token_hex(10)
    await store.insert_campaign(Campaign(
        id=cid, tenant_id=tenant_id, name=cid, status=CampaignStatus.IMPORTING.value, caller_id="",
        destination="dialerd-demo,s,1", default_region="US", max_concurrent_calls=max_concurrent_calls,
        retries_per_contact=0, retry_delay_seconds=60, ring_timeout_seconds=30, import_report={},
        created_by="test", scheduled_at=None, created_at=now, updated_at=now,
    ))
    await store.insert_contacts(cid, [{"line": i + 2, "phone_e164": n, "raw_number": n, "fields": {}}
                                      for i, n in enumerate(numbers)])
    await store.finish_import(cid, CampaignStatus.DRAFT, {"contacts": len(numbers)})
    return cid


async def _until(what: str, predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.005)


async def test_slots_are_reserved_per_call_freed_at_its_end_and_wake_the_runners(rig: Rig) -> None:
    tenant_id, _key = await create_key(rig.store, "acme", concurrent_max=2, calls_per_minute=6000,
                                       defaults=(10, 60))
    numbers = [f"+1415555{n:04d}" for n in range(6)]
    for n in numbers:
        rig.pbx.program(n, TALK)
    a = await _campaign(rig.store, tenant_id, numbers[:3], max_concurrent_calls=1)
    b = await _campaign(rig.store, tenant_id, numbers[3:], max_concurrent_calls=1)
    started = time.monotonic()
    for cid in (a, b):
        campaign = await rig.store.get_campaign(cid)
        assert campaign is not None
        await rig.lifecycle.run(tenant_id, lambda c=campaign: _loaded(c), CampaignAction.START)

    # Both campaigns at their cap at once: one slot each, two of the tenant's, two calls named.
    await _until("both campaigns dialling", lambda: rig.slots.total() == 2, 10)
    assert (rig.slots.calls_in_flight(a), rig.slots.calls_in_flight(b), rig.slots.tenant_in_flight(tenant_id)) == (
        1, 1, 2)
    assert rig.slots.tenant_caps() == {tenant_id: 2}

    async def completed() -> bool:
        rows = [await rig.store.get_campaign(cid) for cid in (a, b)]
        return all(r is not None and r.status == CampaignStatus.COMPLETED for r in rows)

    while not await completed():
        assert time.monotonic() - started < 20, "campaigns not completed"
        await asyncio.sleep(0.02)
    # Three calls in a row per campaign, each up 0.3 s: a runner at its cap sleeps 5 s unless the
    # freed slot wakes it, so without the wake-ups this takes over 10 s.
    assert time.monotonic() - started < 5
    assert len(rig.pbx.requests) == 6 and rig.pbx.peak_channels == 2
    assert (rig.slots.total(), rig.slots.calls_in_flight(a), rig.slots.calls_in_flight(b)) == (0, 0, 0)
    assert rig.slots.tenant_in_flight(tenant_id) == 0
    assert rig.dispatcher.outcomes == {"completed": 6}
    assert rig.crashed == []


async def _loaded(campaign: Campaign) -> Campaign:
    return campaign
