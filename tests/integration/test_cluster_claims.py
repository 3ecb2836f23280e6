"""The claim several daemons share on one PostgreSQL database (store/cluster.py), on the real database:
several engines stand for several daemons (each its own pool and its own in-process write lock, as two
processes have).

What is shown: a daemon's epoch fences its claims; the campaign's and tenant's caps, the pace and the daily
cap are counted across daemons; claims racing from four engines hand each contact to exactly one of them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from dialerd.domain.call import Skipped
from dialerd.domain.cluster import Fenced, Seat
from dialerd.domain.rules import BlockReason, Hold
from dialerd.store.base import T_ATTEMPT, T_TENANT
from dialerd.store.cluster import ClusterStore
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.store.tables import Attempt, Campaign, Contact
from dialerd.timestamps import utcnow
from tests.integration.test_store import insert_many, make_campaign

pytestmark = pytest.mark.postgres


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[Store]]:
    """Four stores on one database: four daemons."""
    first = create_engine(pg_url)
    await migrate(first)
    out = [Store(first), *(Store(create_engine(pg_url)) for _ in range(3))]
    try:
        yield out
    finally:
        for s in out:
            await s.close()


def cluster(store: Store) -> ClusterStore:
    assert store.cluster is not None, "PostgreSQL gives the store its cluster part"
    return store.cluster


async def tenant(store: Store, concurrent_max: int = 100, cpm: int = 100_000, **rules: int | str) -> str:
    tid = "ten_" + secrets.token_hex(4)
    await store.ensure_tenant(tid, tid, concurrent_max, cpm, rules or None)
    return tid


async def running(store: Store, tenant_id: str, contacts: int, **overrides: object) -> Campaign:
    cid = await make_campaign(store, tenant_id, status="running", **overrides)
    await insert_many(store, cid, contacts)
    campaign = await store.get_campaign(cid)
    assert campaign is not None
    return campaign


async def claim(store: Store, seat: Seat, campaign: Campaign) -> tuple[Contact, Attempt] | Skipped | Hold | None:
    return await cluster(store).claim(
        seat, campaign, utcnow(), name_channel=lambda c: f"ch-{c.id}-{c.attempts + 1}-{secrets.token_hex(2)}",
        caller_id_for=lambda c: "+14155550199",
    )


async def attempts(store: Store, campaign_id: str) -> list[tuple[int, str | None]]:
    async with store.read() as conn:
        rows = (await conn.execute(
            select(T_ATTEMPT.c.contact_id, T_ATTEMPT.c.node_id).where(T_ATTEMPT.c.campaign_id == campaign_id)
        )).all()
    return [(int(r[0]), r[1]) for r in rows]


async def test_register_raises_the_epoch_and_an_old_epoch_is_fenced(stores: list[Store]) -> None:
    a, b = stores[0], stores[1]
    old = await cluster(a).register("pbx1/dialerd", "http://127.0.0.1:1", utcnow())
    assert old.epoch == 1
    campaign = await running(a, await tenant(a), 3)
    claimed = await claim(a, old, campaign)
    assert isinstance(claimed, tuple), claimed
    assert claimed[1].node_id == "pbx1/dialerd" and claimed[1].node_epoch == 1
    # A second process starts under the same id: the first one's epoch is over.
    new = await cluster(b).register("pbx1/dialerd", "http://127.0.0.1:1", utcnow())
    assert new.epoch == 2
    with pytest.raises(Fenced) as caught:
        await claim(a, old, campaign)
    assert caught.value.current == 2 and "fenced" in str(caught.value)
    assert await cluster(a).heartbeat(old, utcnow(), held_reason=None, calls_in_flight=0) is False
    assert await cluster(b).heartbeat(new, utcnow(), held_reason="pbx_down", calls_in_flight=0) is True
    assert len(await attempts(a, campaign.id)) == 1, "the fenced claim wrote nothing"
    assert isinstance(await claim(b, new, campaign), tuple)
    [view] = await cluster(a).nodes()
    assert (view.node_id, view.epoch, view.state, view.held_reason) == ("pbx1/dialerd", 2, "up", "pbx_down")
    await cluster(b).leave(new, utcnow())
    [view] = await cluster(a).nodes()
    assert view.state == "stopped"


async def test_the_campaign_cap_is_counted_across_daemons(stores: list[Store]) -> None:
    a, b = stores[0], stores[1]
    sa = await cluster(a).register("a", "pbx-a", utcnow())
    sb = await cluster(b).register("b", "pbx-b", utcnow())
    campaign = await running(a, await tenant(a), 10, max_concurrent_calls=3)
    got = [await claim(a, sa, campaign), await claim(b, sb, campaign), await claim(a, sa, campaign)]
    assert all(isinstance(g, tuple) for g in got), got
    held = await claim(b, sb, campaign)
    assert isinstance(held, Hold) and held.reason == BlockReason.CAMPAIGN_CONCURRENCY, held
    assert held.detail == {"max_concurrent_calls": 3, "in_flight": 3}
    # One call ends (here: given back unsent): the other daemon may claim again.
    first = got[0]
    assert isinstance(first, tuple)
    assert await a.give_back_attempt(first[1].channel_id)
    assert isinstance(await claim(b, sb, campaign), tuple)
    assert sorted(node for _, node in await attempts(a, campaign.id)) == ["a", "a", "b", "b"]


async def test_the_tenant_cap_is_counted_across_its_campaigns_and_daemons(stores: list[Store]) -> None:
    a, b = stores[0], stores[1]
    sa = await cluster(a).register("a", "pbx-a", utcnow())
    sb = await cluster(b).register("b", "pbx-b", utcnow())
    tid = await tenant(a, concurrent_max=2)
    one = await running(a, tid, 5, max_concurrent_calls=5)
    two = await running(a, tid, 5, max_concurrent_calls=5)
    assert isinstance(await claim(a, sa, one), tuple)
    assert isinstance(await claim(b, sb, two), tuple)
    held = await claim(a, sa, two)
    assert isinstance(held, Hold) and held.reason == BlockReason.TENANT_CONCURRENCY, held
    assert held.until is not None and held.until - utcnow() < timedelta(seconds=1)


async def test_the_pace_and_the_minute_window_are_the_tenants_across_daemons(stores: list[Store]) -> None:
    a, b = stores[0], stores[1]
    sa = await cluster(a).register("a", "pbx-a", utcnow())
    sb = await cluster(b).register("b", "pbx-b", utcnow())
    tid = await tenant(a, cpm=6)  # one start per 10 s, six a minute
    campaign = await running(a, tid, 10, max_concurrent_calls=10)
    before = utcnow()
    assert isinstance(await claim(a, sa, campaign), tuple)
    held = await claim(b, sb, campaign)
    assert isinstance(held, Hold) and held.reason == BlockReason.TENANT_RATE, held
    assert held.until is not None and timedelta(seconds=9) < held.until - before <= timedelta(seconds=10.5)

    async def pace_passed() -> None:  # the pace instant moved back rather than waited for
        async with a.write() as conn:
            await conn.execute(update(T_TENANT).where(T_TENANT.c.id == tid).values(pace_at=utcnow()))

    for i in range(5):
        await pace_passed()
        assert isinstance(await claim(b if i % 2 == 0 else a, sb if i % 2 == 0 else sa, campaign), tuple)
    # Six starts within the minute: the hard window holds the seventh until the first leaves it.
    await pace_passed()
    held = await claim(a, sa, campaign)
    assert isinstance(held, Hold) and held.reason == BlockReason.TENANT_RATE, held
    assert held.until is not None and timedelta(seconds=55) < held.until - before <= timedelta(seconds=61)


async def test_the_daily_cap_is_counted_across_daemons(stores: list[Store]) -> None:
    a, b = stores[0], stores[1]
    sa = await cluster(a).register("a", "pbx-a", utcnow())
    sb = await cluster(b).register("b", "pbx-b", utcnow())
    tid = await tenant(a, daily_calls_max=2)
    campaign = await running(a, tid, 5)
    assert isinstance(await claim(a, sa, campaign), tuple)
    assert isinstance(await claim(b, sb, campaign), tuple)
    held = await claim(a, sa, campaign)
    assert isinstance(held, Hold) and held.reason == BlockReason.DAILY_CALLS_MAX, held
    assert held.detail["used"] == 2 and held.detail["limit"] == 2


async def test_racing_daemons_claim_each_contact_exactly_once(stores: list[Store]) -> None:
    seats = [await cluster(s).register(f"node-{i}", f"pbx-{i}", utcnow()) for i, s in enumerate(stores)]
    total = 120
    campaign = await running(stores[0], await tenant(stores[0], concurrent_max=10_000), total,
                             max_concurrent_calls=10_000)

    async def drain(store: Store, seat: Seat) -> int:
        mine = 0
        for _ in range(total * 20):  # bounded
            got = await claim(store, seat, campaign)
            if got is None:
                return mine
            if isinstance(got, Hold):  # the pace (0.6 ms apart at this rate), as a runner waits it
                assert got.reason == BlockReason.TENANT_RATE and got.until is not None, got
                await asyncio.sleep(max(0.0, (got.until - utcnow()).total_seconds()))
                continue
            assert isinstance(got, tuple), got
            mine += 1
        return mine

    counts = await asyncio.gather(*(drain(s, seat) for s, seat in zip(stores, seats, strict=True)))
    rows = await attempts(stores[0], campaign.id)
    assert sum(counts) == len(rows) == total
    assert len({contact for contact, _ in rows}) == total, "no contact was handed to two daemons"
    assert sum(1 for c in counts if c > 0) >= 2, f"the claims spread over the daemons: {counts}"
    async with stores[0].read() as conn:
        nodes = (await conn.execute(select(func.count(func.distinct(T_ATTEMPT.c.node_id))))).scalar_one()
    assert nodes == sum(1 for c in counts if c > 0)


async def test_a_suppressed_number_is_skipped_in_the_claim(stores: list[Store]) -> None:
    a = stores[0]
    seat = await cluster(a).register("a", "pbx-a", utcnow())
    tid = await tenant(a)
    campaign = await running(a, tid, 2)
    contacts, _ = await a.list_contacts(campaign.id, None, 10, 0)
    await a.add_suppressions(tid, [contacts[0].phone_e164], ["test"], "api")
    skipped = await claim(a, seat, campaign)
    assert isinstance(skipped, Skipped) and skipped.contact_id == contacts[0].id
    claimed = await claim(a, seat, campaign)
    assert isinstance(claimed, tuple) and claimed[0].id == contacts[1].id
