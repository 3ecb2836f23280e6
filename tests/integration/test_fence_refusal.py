"""An originate the PBX fence refused (docs/fencing.md) ends as *not dialled*, on SQLite and PostgreSQL:
the attempt moves to ``not_dialled`` from dialing or originated, its contact is pending again and due at
once with its attempt not counted (no retry spent), a ``pending`` event says why; a stopped campaign
cancels it instead. The real PBX's side (cause 52, ``DIALERD_FENCED``, no carrier leg) is in
test_fence_pbx.py and, through running daemons, test_cluster_pbxs.py."""

from __future__ import annotations

import asyncio

import pytest

from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.domain.campaign import CampaignStatus
from dialerd.faults import Failpoints
from dialerd.services.following import CallFollower
from dialerd.services.slots import Slots
from dialerd.store.repo import Store
from dialerd.store.tables import Attempt
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow
from tests.integration.test_store import all_contacts, make_campaign, make_tenant, number, rows, store

pytestmark = pytest.mark.timeout(60)
__all__ = ["store"]  # the fixture, on both backends


class Pbx:
    name = "fake"

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    async def forget(self, channel_id: str) -> None:
        self.forgotten.append(channel_id)


def _follower(store: Store) -> tuple[CallFollower, Slots, Pbx, TaskOwner]:
    up = asyncio.Event()
    up.set()
    slots, pbx, tasks = Slots(store), Pbx(), TaskOwner()
    return CallFollower(store, pbx, slots, pbx_up=up, tasks=tasks, failpoints=Failpoints()), slots, pbx, tasks  # type: ignore[arg-type]


def _refused(channel_id: str, epoch: str = "7") -> CallEvent:
    return CallEvent(channel_id, CallEventKind.ENDED, utcnow(), cause=52, state="Down", fenced=epoch)


@pytest.mark.parametrize("originated", [True, False], ids=["originated", "dialing"])
async def test_a_refused_originate_leaves_the_contact_to_dial_and_spends_no_attempt(
    store: Store, originated: bool
) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running", retries_per_contact=0)
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    attempt = await store.begin_attempt(contact, "ch-1")
    assert isinstance(attempt, Attempt) and attempt.number == 1
    follower, slots, pbx, tasks = _follower(store)
    campaign = await store.get_campaign(cid)
    assert campaign is not None
    await slots.track("ch-1", cid, campaign.tenant_id)
    if originated:
        await follower.originated("ch-1", "Local/+14155550101@dialerd-fence-00000001;1")
        assert (await all_contacts(store, cid))[0].status == "originated"
    # From the event's end alone (retries_per_contact 0: a failure would be final).
    await follower.ended(_refused("ch-1"))

    got = await store.get_attempt("ch-1")
    assert got is not None and (got.state, got.reason, got.cause) == ("not_dialled", "not_dialled", 52)
    (after,) = await all_contacts(store, cid)
    assert (after.status, after.attempts, after.next_attempt_at, after.failure_reason) == ("pending", 0, None, None)
    assert [c.id for c in await store.next_due_contacts(cid, utcnow(), 10)] == [contact.id]
    events = await store.events_after(cid, 0)
    pending = [e for e in events if e.kind == "pending"]
    assert pending and pending[-1].payload["not_dialled"] == "fenced" and pending[-1].payload["cause"] == 52
    assert slots.total() == 0 and pbx.forgotten == ["ch-1"]
    # The same end again (the record read by a reconcile) changes nothing.
    await follower.ended(_refused("ch-1"))
    assert len([e for e in await store.events_after(cid, 0) if e.kind == "pending"]) == len(pending)
    # The next attempt is number 1 again: the refused one was never a call.
    again = await store.begin_attempt(after, "ch-2")
    assert isinstance(again, Attempt) and again.number == 1
    await tasks.cancel_all()


async def test_a_refused_originate_of_a_stopped_campaign_is_cancelled(store: Store) -> None:
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "ch-1") is not None
    follower, _slots, _pbx, tasks = _follower(store)
    await follower.originated("ch-1", "Local/x;1")
    changed, _ = await store.set_campaign_status(cid, CampaignStatus.RUNNING, CampaignStatus.COMPLETED,
                                                 event_payload={"action": "stop"}, cancel_pending=True)
    assert changed
    await follower.ended(_refused("ch-1"))
    (after,) = await all_contacts(store, cid)
    assert after.status == "cancelled"
    assert [e.kind for e in await store.events_after(cid, 0)][-2:] == ["cancelled", "end"]
    await tasks.cancel_all()


async def test_an_answered_call_is_never_taken_for_a_refusal(store: Store) -> None:
    """A fence marker on a call that was answered (it reached the callee) does not undo the call."""
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "ch-1") is not None
    follower, _slots, _pbx, tasks = _follower(store)
    await follower.originated("ch-1", "Local/x;1")
    await follower.ended(CallEvent("ch-1", CallEventKind.ENDED, utcnow(), cause=16, state="Up", answered=True,
                                   fenced="7"))
    got = await store.get_attempt("ch-1")
    assert got is not None and got.state == "ended"
    assert (await all_contacts(store, cid))[0].status == "completed"
    await tasks.cancel_all()


async def test_give_back_is_for_unsent_attempts_only(store: Store) -> None:
    """``give_back_attempt`` moves a dialing attempt only: an originated one's contact is originated too, and
    only an end (``record_transition``) moves both."""
    cid = await make_campaign(store, await make_tenant(store), status="running")
    await store.insert_contacts(cid, rows([number(1)]))
    (contact,) = await all_contacts(store, cid)
    assert await store.begin_attempt(contact, "ch-1") is not None
    follower, _slots, _pbx, tasks = _follower(store)
    await follower.originated("ch-1", "Local/x;1")
    assert not await store.give_back_attempt("ch-1")
    got = await store.get_attempt("ch-1")
    assert got is not None and got.state == "originated"
    await tasks.cancel_all()
