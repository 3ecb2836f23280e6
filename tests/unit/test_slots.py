"""The in-flight ledger (services/slots.py): counts per campaign and tenant, and who a freed slot wakes."""

from __future__ import annotations

import asyncio

import pytest

from dialerd.services.slots import TENANT_REFRESH_SECONDS, Slots
from dialerd.store.tables import Tenant

pytestmark = pytest.mark.timeout(10)


class Tenants:
    """A TenantReader over a dict; counts its reads."""

    def __init__(self, **caps: tuple[int, int]) -> None:
        self.rows = {tid: Tenant(id=tid, name=tid, concurrent_max=cmax, calls_per_minute=cpm)
                     for tid, (cmax, cpm) in caps.items()}
        self.reads = 0

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        self.reads += 1
        return self.rows.get(tenant_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ledger(**caps: tuple[int, int]) -> tuple[Slots, Tenants, Clock]:
    tenants, clock = Tenants(**caps), Clock()
    return Slots(tenants, clock=clock), tenants, clock


def _counts(slots: Slots) -> tuple[int, int, int, int, int]:
    return (slots.calls_in_flight("c1"), slots.calls_in_flight("c2"), slots.calls_in_flight("c3"),
            slots.tenant_in_flight("acme"), slots.tenant_in_flight("globex"))


async def test_reserve_and_release_count_per_campaign_and_per_tenant() -> None:
    slots, _, _ = _ledger()
    assert _counts(slots) == (0, 0, 0, 0, 0)
    slots.reserve("c1", "acme")
    slots.reserve("c1", "acme")
    slots.reserve("c2", "acme")
    slots.reserve("c3", "globex")
    assert _counts(slots) == (2, 1, 1, 3, 1)
    slots.release("c1", "acme")
    assert _counts(slots) == (1, 1, 1, 2, 1)
    slots.release("c3", "globex")
    slots.release("c3", "globex")  # released twice: counted once, never below zero
    assert _counts(slots) == (1, 1, 0, 2, 0)
    slots.release("unknown", "nobody")
    assert (slots.calls_in_flight("unknown"), slots.tenant_in_flight("nobody")) == (0, 0)


async def test_a_call_frees_its_slot_once_when_it_ends() -> None:
    slots, _, _ = _ledger()
    slots.reserve("c1", "acme")
    slots.hold("ch-1", "c1", "acme")
    assert (slots.holds("ch-1"), slots.total(), slots.calls_in_flight("c1"), slots.tenant_in_flight("acme")) == (
        True, 1, 1, 1)
    slots.end_call("ch-1")
    assert (slots.holds("ch-1"), slots.total(), slots.calls_in_flight("c1"), slots.tenant_in_flight("acme")) == (
        False, 0, 0, 0)
    slots.reserve("c1", "acme")
    slots.end_call("ch-1")  # a second end of the same call (a late event): the other slot stays taken
    assert slots.calls_in_flight("c1") == 1


async def test_a_dropped_call_keeps_its_slot_for_the_runner_to_release() -> None:
    slots, _, _ = _ledger()
    slots.reserve("c1", "acme")
    slots.hold("ch-1", "c1", "acme")
    slots.drop("ch-1")  # the originate was refused: the call is forgotten, the runner releases
    assert (slots.holds("ch-1"), slots.total(), slots.calls_in_flight("c1")) == (False, 0, 1)
    slots.end_call("ch-1")  # its end recorded afterwards frees nothing more
    assert slots.calls_in_flight("c1") == 1
    slots.release("c1", "acme")
    assert (slots.calls_in_flight("c1"), slots.tenant_in_flight("acme")) == (0, 0)


async def test_a_freed_slot_wakes_its_campaign_and_the_tenants_other_runners_only() -> None:
    slots, _, _ = _ledger()
    for cid, tid in (("c1", "acme"), ("c2", "acme"), ("c3", "globex")):
        slots.watch(cid, tid)
    events = {cid: slots.wake_event(cid) for cid in ("c1", "c2", "c3")}
    slots.reserve("c1", "acme")
    assert not any(e.is_set() for e in events.values())  # reserving wakes nobody
    slots.release("c1", "acme")
    assert {cid: e.is_set() for cid, e in events.items()} == {"c1": True, "c2": True, "c3": False}

    for e in events.values():
        e.clear()
    slots.unwatch("c2")  # its runner stopped: no longer woken for the tenant's slots
    slots.reserve("c1", "acme")
    slots.hold("ch-1", "c1", "acme")
    slots.end_call("ch-1")
    assert {cid: e.is_set() for cid, e in events.items()} == {"c1": True, "c2": False, "c3": False}


async def test_a_sleeping_runner_wakes_when_a_slot_frees() -> None:
    slots, _, _ = _ledger()
    slots.watch("c1", "acme")
    slots.watch("c2", "acme")
    slots.reserve("c1", "acme")
    sleeper = asyncio.create_task(slots.sleep("c2", 5.0))  # c2 waits for a slot of its tenant
    await asyncio.sleep(0)
    assert not sleeper.done()
    slots.release("c1", "acme")
    async with asyncio.timeout(1):
        await sleeper
    assert not slots.wake_event("c2").is_set()  # the wake-up is consumed: the next sleep waits again
    async with asyncio.timeout(1):
        await slots.sleep("c2", 0.01)


async def test_shutdown_waits_until_the_last_call_ends() -> None:
    slots, _, _ = _ledger()
    async with asyncio.timeout(1):
        await slots.wait_empty()  # nothing in flight: returns at once
    for n in (1, 2):
        slots.reserve("c1", "acme")
        slots.hold(f"ch-{n}", "c1", "acme")
    waiter = asyncio.create_task(slots.wait_empty())
    slots.end_call("ch-1")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiter.done() and slots.total() == 1
    slots.end_call("ch-2")
    async with asyncio.timeout(1):
        await waiter
    assert slots.total() == 0


async def test_a_call_found_in_flight_is_counted_and_its_tenant_caps_read() -> None:
    slots, tenants, _ = _ledger(acme=(4, 60))
    assert slots.tenant_caps() == {}
    await slots.track("ch-1", "c1", "acme")
    await slots.track("ch-2", "c2", "acme")
    assert (slots.total(), slots.calls_in_flight("c1"), slots.calls_in_flight("c2")) == (2, 1, 1)
    assert slots.tenant_in_flight("acme") == 2
    assert slots.tenant_caps() == {"acme": 4} and tenants.reads == 1
    slots.end_call("ch-1")
    slots.end_call("ch-2")
    assert (slots.total(), slots.tenant_in_flight("acme")) == (0, 0)


async def test_tenant_caps_are_reread_at_most_every_refresh_period() -> None:
    slots, tenants, clock = _ledger(acme=(4, 60))
    first = await slots.tenant("acme")
    assert (first.concurrent_max, first.pacer.per_minute, tenants.reads) == (4, 60, 1)
    tenants.rows["acme"].concurrent_max, tenants.rows["acme"].calls_per_minute = 2, 30
    clock.now += TENANT_REFRESH_SECONDS
    assert (await slots.tenant("acme")).concurrent_max == 4 and tenants.reads == 1
    clock.now += 0.01
    again = await slots.tenant("acme")
    assert again is first  # the same record: its pacers keep their history across a refresh
    assert (again.concurrent_max, again.pacer.per_minute, again.sent.per_minute, tenants.reads) == (2, 30, 30, 2)
    assert slots.limits("acme") is first and slots.limits("globex") is None
    with pytest.raises(RuntimeError, match="vanished"):
        await slots.tenant("globex")
