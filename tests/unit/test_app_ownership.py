"""Pure rules behind the ARI app takeover handling: who holds the app, what a dropped answer is."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.domain.causes import classify
from dialerd.domain.contact import FailureReason
from dialerd.pbx.ari_client import describe_error
from dialerd.pbx.errors import PbxRequestError
from dialerd.pbx.ownership import (
    OWNER_FRESH_S,
    Owner,
    app_subscriptions,
    other_live_owner,
    parse_owner,
    startup_verdict,
)
from dialerd.pbx.records import parse_hangup_record

NOW = 1_800_000_000.0
OTHER = Owner("theirs", "host-b", 4242, NOW - 3)


def _app(channels: int = 0) -> dict[str, object]:
    return {"name": "dialerd", "channel_ids": [f"c{i}" for i in range(channels)], "bridge_ids": [],
            "endpoint_ids": [], "device_names": []}


def test_owner_record_round_trips() -> None:
    assert parse_owner(OTHER.encode()) == Owner("theirs", "host-b", 4242, float(int(NOW - 3)))
    for bad in ("", "x", "a|b|c", "a|b|notapid|1", "|h|1|1"):
        assert parse_owner(bad) is None


def test_only_a_fresh_record_of_another_live_process_counts() -> None:
    assert other_live_owner(OTHER, "mine", NOW, host="host-a") == OTHER
    assert other_live_owner(OTHER, "theirs", NOW, host="host-a") is None  # our own record
    stale = Owner("theirs", "host-b", 4242, NOW - OWNER_FRESH_S - 1)
    assert other_live_owner(stale, "mine", NOW, host="host-a") is None
    assert other_live_owner(None, "mine", NOW, host="host-a") is None
    # Same host: the process must still exist (a crash then a quick restart is not "another dialerd").
    assert other_live_owner(OTHER, "mine", NOW, host="host-b", alive=lambda pid: False) is None
    assert other_live_owner(OTHER, "mine", NOW, host="host-b", alive=lambda pid: pid == 4242) == OTHER


def test_startup_verdict() -> None:
    assert startup_verdict(None, None) is None  # not registered: free
    held = startup_verdict(_app(), None)  # listed after the forced clean-up with nothing subscribed
    assert held is not None and "already registered by a live client" in held and "DIALERD_ARI_APP" in held
    # Calls left in the app by a dialerd that stopped: ours to reconcile, so start.
    assert startup_verdict(_app(channels=2), None) is None
    by_dialerd = startup_verdict(_app(channels=2), OTHER)
    assert by_dialerd is not None and "held by another dialerd pid 4242 on host-b" in by_dialerd
    assert app_subscriptions(_app(channels=3)) == 3 and app_subscriptions(None) == 0


def _ended(**kw: object) -> CallEvent:
    return CallEvent("c1", CallEventKind.ENDED, datetime.now(tz=UTC), **kw)  # type: ignore[arg-type]


def test_an_answer_asterisk_dropped_at_stasis_is_app_unavailable() -> None:
    # The hangup record measured for "Stasis app doesn't exist" / "not active".
    dropped = parse_hangup_record("c1", "0|SIP 200 OK|Up|1796189832|")
    assert dropped is not None and dropped.answered and dropped.cause == 0
    outcome = classify(dropped, answer_seen=False)
    assert (outcome.answered, outcome.reason) == (False, FailureReason.APP_UNAVAILABLE)
    assert not FailureReason.APP_UNAVAILABLE.retryable
    # dialerd saw (and routed) the answer: whatever the cause, the call was answered.
    assert classify(dropped, answer_seen=True).answered
    assert classify(dropped).answered  # unknown: the old rule
    # A normal answered end (cause 16) is completed even when dialerd never saw the answer.
    normal = parse_hangup_record("c1", "16|SIP 200 OK|Up|1796189832|")
    assert normal is not None and classify(normal, answer_seen=False).answered
    # Not answered: the usual rules.
    assert classify(_ended(cause=17, tech_cause=486, state="Down"), answer_seen=False).reason is FailureReason.BUSY


@pytest.mark.parametrize(("exc", "sentence"), [
    (PbxRequestError("x", status=401), "ARI 401: check DIALERD_ARI_PASSWORD and ari.conf"),
    (TimeoutError(), "ARI at http://127.0.0.1:1 did not answer in time"),
])
def test_ari_errors_read_as_one_sentence(exc: BaseException, sentence: str) -> None:
    assert describe_error(exc, "http://127.0.0.1:1") == sentence


def test_ari_handshake_401_names_the_setting() -> None:
    exc = aiohttp.WSServerHandshakeError(request_info=None, history=(), status=401,  # type: ignore[arg-type]
                                         message="Invalid response status")
    assert describe_error(exc, "http://x") == "ARI 401: check DIALERD_ARI_PASSWORD and ari.conf"
