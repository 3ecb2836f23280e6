"""After a restart the ARI websocket is up before ``CallFollower.recover`` runs, so a call's end can be
applied between recover's read of the attempts in flight and the slot it then counts for each. The slot
must still be freed: a slot left held keeps the campaign's count above zero, and the runner never
completes the campaign (seen once in CI: test_webhooks_crash, every contact final, campaign running).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from dialerd.domain.call import AttemptState, ChannelLookup
from dialerd.faults import Failpoints
from dialerd.services.following import CallFollower
from dialerd.services.slots import Slots
from dialerd.store.tables import Attempt, Campaign, Tenant
from dialerd.tasks import TaskOwner

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Store:
    """The follower's store, reduced to what recover and reconcile read; ``end_on`` names the read after
    which the attempt's end lands (as a ChannelDestroyed applied by another task would)."""

    def __init__(self, end_on: str) -> None:
        self.slots: Slots | None = None
        self.attempt = Attempt(id=1, contact_id=1, campaign_id="c1", number=1, channel_id="ch-1",
                               state=AttemptState.ORIGINATED.value, created_at=T0)
        self.end_on = end_on
        self.reads: list[str] = []

    def _read(self, what: str) -> None:
        self.reads.append(what)
        if what == self.end_on:  # the end is applied as CallFollower.ended does: the row, then the slot
            self.attempt = self.attempt.model_copy(update={"state": AttemptState.ENDED.value})
            assert self.slots is not None
            self.slots.end_call(self.attempt.channel_id)

    async def attempts_in_flight(self, node_id: str | None = None) -> list[Attempt]:
        found = [self.attempt] if AttemptState(self.attempt.state).in_flight else []
        self._read("in_flight")
        return found

    async def get_attempt(self, channel_id: str) -> Attempt | None:
        found = self.attempt
        self._read(f"attempt{sum(r.startswith('attempt') for r in self.reads) + 1}")
        return found

    async def get_campaign(self, campaign_id: str) -> Campaign:
        self._read("campaign")
        return Campaign(id="c1", tenant_id="t1", name="c", status="running", max_concurrent_calls=5, caller_id="",
                        destination="dialerd-demo", default_region="US", retries_per_contact=0,
                        retry_delay_seconds=60, ring_timeout_seconds=30, created_by="k1")

    async def get_tenant(self, tenant_id: str) -> Tenant:
        return Tenant(id="t1", name="acme", concurrent_max=10, calls_per_minute=600)

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]:
        return 0, 0.0


class Pbx:
    """Says the channel is still up (the end is only known to the database, as in the race)."""

    name = "fake"

    async def lookup(self, channel_id: str) -> ChannelLookup:
        return ChannelLookup(channel_id, live=True)


def _follower(end_on: str) -> tuple[CallFollower, Slots, Store, TaskOwner]:
    store = Store(end_on)
    slots = store.slots = Slots(store)
    up = asyncio.Event()
    up.set()
    tasks = TaskOwner()
    follower = CallFollower(store, Pbx(), slots, pbx_up=up, tasks=tasks, failpoints=Failpoints())  # type: ignore[arg-type]
    return follower, slots, store, tasks


async def _recover(end_on: str) -> tuple[Slots, Store]:
    follower, slots, store, tasks = _follower(end_on)
    assert await follower.recover() == 1
    assert slots.total() == 1  # counted before its reconcile runs (an end that landed before freed nothing)
    for _ in range(1000):  # until the reconcile task is done (a condition, bounded)
        if not any(n.startswith("reconcile-") for n in tasks.names()):
            break
        await asyncio.sleep(0.005)
    assert not tasks.names(), tasks.names()
    return slots, store


@pytest.mark.parametrize("end_on", ["in_flight", "attempt1", "campaign"])
async def test_a_call_that_ended_during_recovery_frees_its_slot(end_on: str) -> None:
    """``in_flight``: the end lands right after recover's read, before its slot is counted (the end frees
    nothing then); ``attempt1``/``campaign``: during the reconcile, once the slot is counted."""
    slots, store = await _recover(end_on)
    assert AttemptState(store.attempt.state) is AttemptState.ENDED
    assert slots.total() == 0, f"the slot of a call that ended is still held (reads: {store.reads})"
    assert slots.calls_in_flight("c1") == 0


async def test_a_reconcile_whose_call_ends_while_its_slot_is_tracked_frees_it() -> None:
    """A reconcile of a call this process holds no slot for (the PBX says live): the end lands after that
    answer, before the slot is counted; the count must not outlive the call."""
    follower, slots, store, tasks = _follower("campaign")
    assert await follower.reconcile("ch-1") is False
    assert AttemptState(store.attempt.state) is AttemptState.ENDED
    assert slots.total() == 0, f"the slot of a call that ended is still held (reads: {store.reads})"
    await tasks.cancel_all()


async def test_a_call_still_up_after_recovery_keeps_its_slot() -> None:
    slots, store = await _recover("never")
    assert AttemptState(store.attempt.state) is AttemptState.ORIGINATED
    assert slots.total() == 1 and slots.calls_in_flight("c1") == 1
