"""The suppression list in the store, on every call store (SqliteCalls, SqlCalls on SQLite and PostgreSQL):
the claim's check in its own transaction, the opt-out written with the call's end, the list's reads and writes."""

from __future__ import annotations

from sqlalchemy import select

from dialerd.domain.call import Skipped
from dialerd.domain.contact import ContactStatus
from dialerd.store.base import T_SUPPRESSION
from dialerd.store.repo import T_ATTEMPT, T_EVENT, Store
from dialerd.store.tables import Event
from dialerd.timestamps import utcnow
from tests.integration.test_store import all_contacts, count, make_campaign, make_tenant, rows, store

__all__ = ["store"]  # the fixture: every call store of each backend


async def test_a_claim_of_a_suppressed_number_skips_it_in_the_same_transaction(store: Store) -> None:
    acme, globex = await make_tenant(store, "acme"), await make_tenant(store, "globex")
    cid = await make_campaign(store, acme, status="running")
    await store.insert_contacts(cid, rows(["+14155550100", "+14155550101"]))
    await store.add_suppressions(globex, ["+14155550100"], ["globex's"], "api")  # never applies to acme
    await store.add_suppressions(acme, ["+14155550101"], ["called in"], "api")
    first, second = await all_contacts(store, cid)
    published: list[Event] = []
    store.publish = published.extend
    try:
        attempt = await store.begin_attempt(first, "chan-1")
        skipped = await store.begin_attempt(second, "chan-2")
    finally:
        store.publish = None
    assert attempt is not None and not isinstance(attempt, Skipped)
    assert skipped == Skipped(int(second.id or 0))
    _, after = await all_contacts(store, cid)
    assert (after.status, after.reason, after.attempts) == (ContactStatus.SKIPPED.value, "suppressed", 0)
    assert [(e.kind, e.payload["phone_number"], e.payload["reason"]) for e in published] == [
        ("skipped", "+14155550101", "suppressed")]
    assert await count(store, T_EVENT, cid) == 1 and await count(store, T_ATTEMPT, cid) == 1
    # Skipped is final: never claimed again, not unfinished.
    assert [c.id for c in await store.next_due_contacts(cid, utcnow(), 10)] == []
    assert await store.unfinished_contacts(cid) == 1  # the one in flight
    assert await store.begin_attempt(after, "chan-3") is None


async def test_an_opt_out_joins_the_tenant_list_with_the_calls_end(store: Store) -> None:
    acme = await make_tenant(store, "acme")
    cid = await make_campaign(store, acme, status="running")
    await store.insert_contacts(cid, rows(["+14155550203", "+14155550105"]))
    opted, other = await all_contacts(store, cid)
    for contact, channel in ((opted, "chan-a"), (other, "chan-b")):
        assert await store.begin_attempt(contact, channel) is not None
        assert await store.record_transition(
            channel, attempt_state="ended", attempt_values={"ended_at": utcnow(), "cause": 16},
            contact_status=ContactStatus.COMPLETED, contact_values={"hangup_cause": 16}, payload={},
            only_from=("dialing",), opt_out=contact is opted,
        ) is not None
    entries, total = await store.list_suppressions(acme, None, 10, 0)
    assert total == 1 and [(e.number, e.source, e.reason) for e in entries] == [
        ("+14155550203", "opt_out", "opt-out during call")]
    # Already listed: adding it again keeps the entry as it was; another campaign's claim skips it.
    assert await store.add_suppressions(acme, ["+14155550203"], ["manual"], "api") == (0, 1)
    async with store.read() as conn:
        listed = (await conn.execute(select(T_SUPPRESSION.c.source))).scalars().all()
    assert listed == ["opt_out"]
    cid2 = await make_campaign(store, acme, status="running")
    await store.insert_contacts(cid2, rows(["+14155550203"]))
    [again] = await all_contacts(store, cid2)
    assert isinstance(await store.begin_attempt(again, "chan-c"), Skipped)


async def test_list_reads_writes_and_the_import_skip(store: Store) -> None:
    acme, globex = await make_tenant(store, "acme"), await make_tenant(store, "globex")
    numbers = [f"+1415555{i:04d}" for i in range(1200)]  # over one insert chunk
    assert await store.add_suppressions(acme, numbers, ["r"] * len(numbers), "import") == (1200, 0)
    assert await store.add_suppressions(acme, numbers[:3] + ["+14155559999"], ["x"] * 4, "api") == (1, 3)
    page, total = await store.list_suppressions(acme, None, 1000, 0)
    assert total == 1201 and len(page) == 1000
    one, total = await store.list_suppressions(acme, "+14155550007", 10, 0)
    assert total == 1 and one[0].reason == "r" and one[0].source == "import"
    assert (await store.list_suppressions(globex, None, 10, 0))[1] == 0
    cid = await make_campaign(store, acme)
    await store.insert_contacts(cid, rows(["+14155550001", "+19995550000", "+14155550002"]))
    assert await store.skip_suppressed(cid, acme) == 2
    assert sorted(c.status for c in await all_contacts(store, cid)) == ["pending", "skipped", "skipped"]
    assert await store.delete_suppression(acme, "+14155550001") is True
    assert await store.delete_suppression(acme, "+14155550001") is False
    assert await store.delete_suppression(globex, "+14155550002") is False
