"""FakePbx: the carrier table in milliseconds, Asterisk's refusals, and the disconnected behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dialerd.domain.call import CallEvent, CallEventKind, ChannelLookup, Destination, OriginateRequest
from dialerd.domain.causes import classify
from dialerd.domain.contact import FailureReason as R
from dialerd.pbx.fake import AMD_PERSON, AMD_SILENCE, AMD_VOICEMAIL, BUSY, FakeOutcome, FakePbx, carrier_outcome
from dialerd.ports import OriginateError

pytestmark = pytest.mark.timeout(10)
DEST = Destination.parse("dialerd-demo,s,1")


class Sink:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.states: list[bool] = []
        self._seen: dict[tuple[str, CallEventKind], asyncio.Event] = {}

    def call_event(self, event: CallEvent) -> None:
        self.events.append(event)
        self._flag(event.channel_id, event.kind).set()

    def connection_changed(self, connected: bool) -> None:
        self.states.append(connected)

    def _flag(self, cid: str, kind: CallEventKind) -> asyncio.Event:
        return self._seen.setdefault((cid, kind), asyncio.Event())

    async def wait_for(self, cid: str, kind: CallEventKind) -> CallEvent:
        async with asyncio.timeout(5):
            await self._flag(cid, kind).wait()
        return next(e for e in self.events if e.channel_id == cid and e.kind is kind)

    async def wait_ended(self, cid: str) -> CallEvent:
        return await self.wait_for(cid, CallEventKind.ENDED)

    def kinds(self, cid: str) -> list[CallEventKind]:
        return [e.kind for e in self.events if e.channel_id == cid]


def req(cid: str, suffix: str, ring_timeout: int = 4, **variables: str) -> OriginateRequest:
    return OriginateRequest(cid, f"+1415555{suffix}", "+15550001", DEST, ring_timeout, variables)


@pytest.fixture
async def sink() -> Sink:
    return Sink()


@pytest.fixture
async def pbx(sink: Sink) -> AsyncIterator[FakePbx]:
    fake = FakePbx(time_scale=0.001)
    await fake.start(sink)
    yield fake
    await fake.close()


ROWS = [
    ("0105", None, [CallEventKind.ANSWERED, CallEventKind.ENDED]),
    ("0129", None, [CallEventKind.ANSWERED, CallEventKind.ENDED]),
    ("0135", None, [CallEventKind.ANSWERED, CallEventKind.ENDED]),
    ("0145", R.BUSY, [CallEventKind.ENDED]),
    ("0155", R.NO_ANSWER, [CallEventKind.PROGRESS, CallEventKind.ENDED]),
    ("0165", R.CONGESTION, [CallEventKind.ENDED]),
    ("0175", R.INVALID_NUMBER, [CallEventKind.ENDED]),
    ("0185", R.REJECTED, [CallEventKind.ENDED]),
    ("0195", None, [CallEventKind.PROGRESS, CallEventKind.ANSWERED, CallEventKind.ENDED]),
]


@pytest.mark.parametrize(("suffix", "reason", "kinds"), ROWS, ids=[r[0] for r in ROWS])
async def test_carrier_row(
    pbx: FakePbx, sink: Sink, suffix: str, reason: R | None, kinds: list[CallEventKind]
) -> None:
    name = await pbx.originate(req("a1", suffix))
    end = await sink.wait_ended("a1")
    assert name.startswith("PJSIP/carrier-")
    assert classify(end).reason == reason
    assert sink.kinds("a1") == kinds


async def test_rows_run_concurrently(sink: Sink) -> None:
    pbx = FakePbx(time_scale=0.01)  # the longest row (20 s) takes 200 ms
    await pbx.start(sink)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i, (suffix, _, _) in enumerate(ROWS):
        await pbx.originate(req(f"c{i}", suffix))
    ends = [await sink.wait_ended(f"c{i}") for i in range(len(ROWS))]
    assert [classify(e).reason for e in ends] == [reason for _, reason, _ in ROWS]
    assert loop.time() - started < 0.6  # one after the other would take 0.2+0.08+0.04+0.02+0.02 s
    assert pbx.peak_channels >= 5 and await pbx.count_channels() == 0
    await pbx.close()


async def test_ring_timeout_shorter_than_ringing_is_no_answer(pbx: FakePbx, sink: Sink) -> None:
    await pbx.originate(req("a1", "0195", ring_timeout=2))  # rings 3 s before answering
    end = await sink.wait_ended("a1")
    assert (classify(end).reason, end.cause, end.tech_cause, end.state) == (R.NO_ANSWER, 19, 480, "Ringing")


async def test_duplicate_live_channel_id_is_refused_until_it_ends(pbx: FakePbx, sink: Sink) -> None:
    await pbx.originate(req("dup", "0135"))
    with pytest.raises(OriginateError, match="409") as refused:
        await pbx.originate(req("dup", "0105"))
    assert refused.value.maybe_dialled is False
    await sink.wait_ended("dup")
    assert await pbx.originate(req("dup", "0145"))  # the id is free again once the channel is gone
    assert len(pbx.requests) == 2


async def test_originate_is_refused_while_disconnected(pbx: FakePbx, sink: Sink) -> None:
    pbx.set_connected(False)
    with pytest.raises(OriginateError, match="disconnected"):
        await pbx.originate(req("a1", "0105"))
    assert sink.states == [True, False] and pbx.requests == []


async def test_answer_while_disconnected_is_hung_up_and_reported_on_reconnect(pbx: FakePbx, sink: Sink) -> None:
    await pbx.originate(req("a1", "0195"))  # rings first, so we can drop the connection before the answer
    await asyncio.sleep(0)  # let it start ringing
    pbx.set_connected(False)
    await asyncio.sleep(0.02)
    found = await pbx.lookup("a1")
    assert found.live is False and found.ended is not None
    assert (found.ended.cause, found.ended.state, classify(found.ended).answered) == (0, "Up", True)
    assert sink.kinds("a1") == [CallEventKind.PROGRESS]  # nothing delivered while disconnected
    pbx.set_connected(True)
    assert sink.kinds("a1") == [CallEventKind.PROGRESS, CallEventKind.ENDED]
    assert sink.states == [True, False, True]


async def test_lookup_live_then_ended_then_forgotten(pbx: FakePbx, sink: Sink) -> None:
    assert (await pbx.lookup("a1")).live is False and (await pbx.lookup("a1")).ended is None
    await pbx.originate(req("a1", "0105"))
    await sink.wait_for("a1", CallEventKind.ANSWERED)
    assert await pbx.lookup("a1") == ChannelLookup("a1", live=True, answered=True)
    await sink.wait_ended("a1")
    found = await pbx.lookup("a1")
    assert found.ended is not None and found.ended.cause == 16
    await pbx.forget("a1")
    assert (await pbx.lookup("a1")).ended is None


async def test_programmed_outcome_and_queued_failure(pbx: FakePbx, sink: Sink) -> None:
    pbx.program("+14155550105", BUSY)
    pbx.fail_next(OriginateError("timeout", maybe_dialled=True))
    with pytest.raises(OriginateError) as failed:
        await pbx.originate(req("a1", "0105"))
    assert failed.value.maybe_dialled is True
    await pbx.originate(req("a2", "0105"))
    assert classify(await sink.wait_ended("a2")).reason is R.BUSY


async def test_variables_are_recorded_with_the_request(pbx: FakePbx) -> None:
    await pbx.originate(req("a1", "0135", DIALERD_CAMPAIGN="camp-1", FIELD="x,y"))
    assert pbx.requests[0].variables == {"DIALERD_CAMPAIGN": "camp-1", "FIELD": "x,y"}


@pytest.mark.parametrize(
    ("number", "outcome"),
    [
        ("+14155550100", FakeOutcome(talk=2.0)),
        ("+14155550199", FakeOutcome(ring=3.0, talk=5.0)),
        ("+14155550217", AMD_PERSON),  # 555-02XX: the AMD ranges
        ("+14155550263", AMD_VOICEMAIL),
        ("+14155550294", AMD_SILENCE),
        ("7", FakeOutcome()),
    ],
)
def test_carrier_outcome_uses_the_last_two_digits(number: str, outcome: FakeOutcome) -> None:
    assert carrier_outcome(number) == outcome
