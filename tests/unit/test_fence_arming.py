"""Arming the PBX fence (docs/fencing.md, "arming"): ``ClusterMember.arm`` takes a new epoch by compare-and-set
from the one this process holds, lets the adapter set the PBX's global to it, and reads it back; a lost
compare-and-set or a moved epoch means this daemon was taken over (``Fenced``). Also the pure parts: the
fence key, the refusal read from a hangup record, and which ends count as refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from dialerd.domain.call import AttemptState, CallEvent, CallEventKind, refused_by_fence
from dialerd.domain.cluster import Fenced, Seat
from dialerd.pbx.fence import check_key, fence_key, fenced_target
from dialerd.pbx.records import parse_hangup_record
from dialerd.services.cluster import ClusterMember
from dialerd.tasks import TaskOwner

pytestmark = pytest.mark.timeout(10)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Nodes:
    """The epoch column of one dialer_node row, with ClusterStore's compare-and-set."""

    def __init__(self) -> None:
        self.epoch = 0
        self.log: list[str] = []

    async def register(self, node_id: str, pbx: str, now: datetime, *, fence_key: str | None = None) -> Seat:
        self.epoch += 1
        self.key = fence_key
        return Seat(node_id, self.epoch)

    async def rearm(self, seat: Seat) -> Seat | None:
        if seat.epoch != self.epoch:
            return None
        self.epoch += 1
        self.log.append(f"cas->{self.epoch}")
        return Seat(seat.node_id, self.epoch)

    async def epoch_of(self, node_id: str) -> int:
        return self.epoch

    def take_over(self) -> None:  # another daemon's UPDATE ... SET epoch = epoch + 1
        self.epoch += 1
        self.log.append(f"taken->{self.epoch}")


async def _member(nodes: Nodes) -> tuple[ClusterMember, TaskOwner]:
    tasks = TaskOwner()
    member = ClusterMember(nodes, tasks, node_id="pbx1/dialerd", pbx="http://127.0.0.1:8088",  # type: ignore[arg-type]
                           heartbeat_interval=60, fence_key=fence_key("pbx1/dialerd"))
    await member.join()
    return member, tasks


async def test_each_arming_takes_a_new_epoch_and_sets_it_on_the_pbx() -> None:
    nodes = Nodes()
    member, tasks = await _member(nodes)
    assert nodes.key == member.key and member.seat.epoch == 1
    pbx: list[int] = []

    async def set_fence(epoch: int) -> None:
        assert member.seat_moved(Seat("pbx1/dialerd", 1)), "a claim under the old seat is retried meanwhile"
        pbx.append(epoch)

    assert await member.arm(set_fence) == 2
    assert await member.arm(set_fence) == 3  # a reconnect: never the same epoch twice
    assert pbx == [2, 3] and member.seat == Seat("pbx1/dialerd", 3)
    assert member.seat_moved(Seat("pbx1/dialerd", 2)) and not member.seat_moved(member.seat)
    await tasks.cancel_all()


async def test_a_taken_over_daemon_never_arms_again() -> None:
    nodes = Nodes()
    member, tasks = await _member(nodes)
    nodes.take_over()  # its heartbeat lapsed (a stall): a taker raised the epoch and fenced it out
    pbx: list[int] = []

    async def set_fence(epoch: int) -> None:
        pbx.append(epoch)

    with pytest.raises(Fenced):
        await member.arm(set_fence)
    assert pbx == [], "the PBX's fence is never re-opened by the daemon taken over"
    await tasks.cancel_all()


async def test_a_takeover_during_the_arming_is_caught_by_the_read_back() -> None:
    """It stalled between its compare-and-set and its set: the taker's bump makes the re-read fail, so the
    epoch it set is never carried by an originate."""
    nodes = Nodes()
    member, tasks = await _member(nodes)

    async def set_fence(epoch: int) -> None:
        nodes.take_over()

    with pytest.raises(Fenced):
        await member.arm(set_fence)
    assert nodes.log == ["cas->2", "taken->3"]
    await tasks.cancel_all()


async def test_a_failed_set_leaves_the_next_arming_a_fresh_epoch() -> None:
    nodes = Nodes()
    member, tasks = await _member(nodes)
    tries: list[int] = []

    async def flaky(epoch: int) -> None:
        tries.append(epoch)
        if len(tries) == 1:
            raise ConnectionError("PBX went away mid-set")

    with pytest.raises(ConnectionError):
        await member.arm(flaky)
    assert not member.seat_moved(member.seat), "the arming is over"
    assert await member.arm(flaky) == 3 and tries == [2, 3]
    await tasks.cancel_all()


async def test_armings_do_not_interleave() -> None:
    nodes = Nodes()
    member, tasks = await _member(nodes)
    order: list[str] = []

    async def slow(epoch: int) -> None:
        order.append(f"set {epoch}")
        await asyncio.sleep(0.01)
        order.append(f"done {epoch}")

    assert sorted(await asyncio.gather(member.arm(slow), member.arm(slow))) == [2, 3]
    assert order == ["set 2", "done 2", "set 3", "done 3"]
    await tasks.cancel_all()


def test_the_fence_key_is_the_same_on_every_daemon_and_fits_the_dialplan() -> None:
    for node in ("pbx1/dialerd", "pbx1/ami@127.0.0.1:5038", "h/fake:8080", "x" * 120):
        key = fence_key(node)
        assert key == fence_key(node) and check_key(key) == key and len(key) == 33
    assert fence_key("a/b") != fence_key("a/c")
    target = fenced_target("PJSIP/+14155550101@carrier", "+14155550101", fence_key("pbx1/dialerd"), 7)
    assert target.endpoint == "Local/+14155550101@dialerd-fence/n"
    assert target.variables["DIALERD_EPOCH"] == "7" and target.formats == "ulaw"


def test_a_hangup_record_of_a_refused_originate_says_so() -> None:
    refused = parse_hangup_record("ch-1", "52|FENCED|Down|1765000000|")
    assert refused is not None and refused.fenced == "record" and refused.cause == 52 and not refused.answered
    busy = parse_hangup_record("ch-2", "17|SIP 486 Busy Here|Down|1765000000|")
    assert busy is not None and busy.fenced is None and busy.tech_cause == 486


@pytest.mark.parametrize(("state", "answered", "fenced", "refused"), [
    (AttemptState.DIALING, False, "7", True),
    (AttemptState.ORIGINATED, False, "none", True),
    (AttemptState.ORIGINATED, True, "7", False),  # it reached the callee
    (AttemptState.ANSWERED, False, "7", False),
    (AttemptState.ORIGINATED, False, None, False),
])
def test_which_ends_are_refusals(state: AttemptState, answered: bool, fenced: str | None, refused: bool) -> None:
    event = CallEvent("ch-1", CallEventKind.ENDED, T0, cause=52, answered=answered, fenced=fenced)
    assert refused_by_fence(state, event) is refused
