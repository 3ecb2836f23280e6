"""dialerd.pbx.fence: the originate target and the refusal markers (the PBX side is in
tests/integration/test_fence_pbx.py)."""

from __future__ import annotations

from typing import Any

import pytest

from dialerd.pbx.errors import PbxRequestError
from dialerd.pbx.fence import (
    FenceError,
    arm,
    fence_out,
    fence_variable,
    fenced_epoch,
    fenced_target,
    read_fence,
    record_is_fenced,
)


def test_fenced_target_dials_the_carrier_endpoint_through_the_fence_context() -> None:
    target = fenced_target("PJSIP/+14155550142@carrier", "+14155550142", "node-1", 12)
    assert target.endpoint == "Local/+14155550142@dialerd-fence/n"
    assert target.variables == {"DIALERD_FENCE_KEY": "node-1", "DIALERD_EPOCH": "12",
                                "DIALERD_DIAL": "PJSIP/+14155550142@carrier"}
    assert target.formats == "ulaw"
    assert fence_variable("node-1") == "DIALERD_FENCE_node-1"


@pytest.mark.parametrize("number", ["", "1", "+1415@x", "141;2", "sip:1415"])
def test_numbers_the_fence_context_cannot_take_are_refused(number: str) -> None:
    with pytest.raises(ValueError, match="cannot be dialled"):
        fenced_target("PJSIP/x@carrier", number, "n", 1)


@pytest.mark.parametrize("key", ["", "a b", "a}", "x" * 65])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="fence key"):
        fence_variable(key)


def test_refusal_markers() -> None:
    assert fenced_epoch({"channelvars": {"DIALERD_FENCED": "7"}}) == "7"
    assert fenced_epoch({"channelvars": {"DIALERD_FENCED": ""}}) is None
    assert fenced_epoch({}) is None and fenced_epoch(None) is None
    assert record_is_fenced("52|FENCED|Down|1796411186|")
    assert not record_is_fenced("17|SIP 486 Busy Here|Down|1796411159|")
    assert not record_is_fenced("")


class FakeAri:
    """The Asterisk global store, with an optional writer that sneaks in right after our POST."""

    def __init__(self, sneak: str | None = None) -> None:
        self.globals: dict[str, str] = {}
        self.sneak = sneak
        self.fail = False

    async def request(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        assert path == "/asterisk/variable"
        name = params["variable"]
        if method == "GET":
            return {"value": self.globals.get(name, "")}
        if self.fail:
            raise PbxRequestError("ARI POST: HTTP 500", status=500, body="boom")
        self.globals[name] = params.get("value", "")
        if self.sneak is not None:
            self.globals[name], self.sneak = self.sneak, None
        return None


async def test_arm_and_fence_out_set_the_global_and_read_it_back() -> None:
    ari = FakeAri()
    assert await read_fence(ari, "n1") is None
    await arm(ari, "n1", 4)
    assert ari.globals["DIALERD_FENCE_n1"] == "4"
    await fence_out(ari, "n1", 5)
    assert await read_fence(ari, "n1") == "fenced-5"


async def test_a_writer_in_between_or_a_refused_set_is_an_error() -> None:
    with pytest.raises(FenceError, match="reads '3'"):
        await fence_out(FakeAri(sneak="3"), "n1", 5)
    ari = FakeAri()
    ari.fail = True
    with pytest.raises(FenceError, match="HTTP 500"):
        await arm(ari, "n1", 1)
