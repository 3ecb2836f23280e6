"""A fence the PBX enforces against a daemon that stalled between committing an attempt and dialling it.

Issue 13 item 4; the argument, the measurements and the races are in ``docs/fencing.md``. In short:
dialerd originates ``Local/<number>@dialerd-fence/n`` instead of the carrier endpoint, with the
variables :func:`fenced_target` returns. The ``;2`` half of that Local channel runs
``[dialerd-fence]`` (``asterisk/conf/extensions_dialerd.conf``), which creates the carrier leg only if
the Asterisk global ``DIALERD_FENCE_<key>`` equals the epoch the originate carries *at that moment*.
The owning daemon sets the global to its epoch (:func:`arm`); a daemon taking over sets it to anything
else (:func:`fence_out`) before it reconciles. The ``;1`` half (the channel dialerd tracks, id = the
attempt's channel id) exists before ``;2`` runs its check, so once ``fence_out`` has returned, every
call that can still reach the carrier is in ``GET /channels`` or has its hangup record.

Why not the other mechanism, kicking the ARI app (measured on 22.10.1, ``tests/integration/
test_fence_pbx.py``): Asterisk accepts ``POST /channels?app=X`` with HTTP 200 and sends the INVITE
while no websocket holds app X, also right after a kick (second websocket connected and closed,
``GET /applications/X`` 404).

Measured facts this module relies on:

- a refused originate ends ``;1`` with cause 52 (:data:`FENCED_CAUSE`), state Down, channel variable
  ``DIALERD_FENCED`` (:data:`FENCED_VAR`) = the refused epoch (``none`` if it carried none), and the
  hangup record ``52|FENCED|Down|<epoch>|``; no PJSIP channel, no INVITE (no far-end CDR row). The
  markers are best effort: if ``;1`` ends first (its originate timeout on a saturated box) it records
  what it saw (e.g. ``19||Down``), still with no carrier leg;
- an allowed one ends with the same Q.850 cause, state and hangup record as a direct PJSIP originate
  (busy, congestion, 404, 603, no answer, answered); ChannelDestroyed's ``tech_cause`` is empty (the
  carrier leg's last SIP response is in ``channelvars.DIALERD_LEG_TECH`` after a failed dial);
- without ``formats`` the Local pair negotiates slin192 and media calls cost about 6x the Asterisk CPU;
  with ``formats=ulaw`` (the trunk's codec) about 1.5x.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.pbx.records import FENCED_TECH

FENCE_CONTEXT = "dialerd-fence"
KEY_VAR = "DIALERD_FENCE_KEY"  # which global the dialplan compares with
EPOCH_VAR = "DIALERD_EPOCH"  # the epoch this originate was sent under
DIAL_VAR = "DIALERD_DIAL"  # the carrier endpoint ;2 dials when the epoch matches
FENCED_VAR = "DIALERD_FENCED"  # set on ;1 when the dialplan refused: the refused epoch, or "none"
LEG_TECH_VAR = "DIALERD_LEG_TECH"  # set on ;1: the carrier leg's last SIP response, or "FENCED"
FENCED_CAUSE = 52  # Q.850 "outgoing call barred": what a refused originate ends with
DEFAULT_FORMATS = "ulaw"  # pin the Local pair to the trunk's codec (else slin192 and ~6x the CPU)

_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER = re.compile(r"\+?[0-9]{2,32}")  # what [dialerd-fence]'s pattern _[+0-9]. accepts, and no @ / ;


class FenceError(PbxError):
    """The fence could not be set or read back as intended; the caller must not assume it holds."""

    error_id = "pbx_fence_error"


class AriRequester(Protocol):
    """What this module needs of :class:`dialerd.pbx.ari_client.AriClient`."""

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class FencedTarget:
    """What replaces ``endpoint`` in ``POST /channels``: merge ``variables`` and pass ``formats``."""

    endpoint: str
    variables: dict[str, str]
    formats: str


def fence_variable(key: str) -> str:
    """The Asterisk global the dialplan compares the originate's epoch with."""
    return f"DIALERD_FENCE_{check_key(key)}"


def fence_key(node_id: str) -> str:
    """The key of a daemon's fence, from its node id (any text: ``HOST/APP``): the same on every daemon, so
    the one taking it over finds the global to set. A digest, as node ids may hold ``/``, ``@``, ``:``."""
    return "n" + hashlib.sha256(node_id.encode()).hexdigest()[:32]


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"fence key must be 1-64 of [A-Za-z0-9_-], got {key!r}")
    return key


def fenced_target(dial: str, number: str, key: str, epoch: int, *, formats: str = DEFAULT_FORMATS) -> FencedTarget:
    """The Local endpoint and variables that dial ``dial`` (e.g. ``PJSIP/+1415...@carrier``) under ``epoch``."""
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"number {number!r} cannot be dialled through {FENCE_CONTEXT}")
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    return FencedTarget(
        endpoint=f"Local/{number}@{FENCE_CONTEXT}/n",  # /n: never optimised away, so ;1 stays the channel
        variables={KEY_VAR: check_key(key), EPOCH_VAR: str(epoch), DIAL_VAR: dial},
        formats=formats,
    )


def fenced_epoch(channel: Mapping[str, Any] | None) -> str | None:
    """From an ARI Channel object (e.g. ChannelDestroyed's): the epoch the fence refused, else None."""
    if not channel:
        return None
    value = (channel.get("channelvars") or {}).get(FENCED_VAR)
    return str(value) if value else None


def record_is_fenced(text: str) -> bool:
    """Whether a ``[dialerd-hh]`` record (``cause|tech|state|epoch|answered``) is of a refused originate."""
    parts = text.strip().split("|")
    return len(parts) > 1 and parts[1].strip() == FENCED_TECH


async def read_fence(client: AriRequester, key: str) -> str | None:
    """The global's value now; None when it is unset (after an Asterisk restart: everything is refused)."""
    reply = await client.request("GET", "/asterisk/variable", params={"variable": fence_variable(key)})
    value = reply.get("value") if isinstance(reply, dict) else None
    return str(value) if value else None


async def arm(client: AriRequester, key: str, epoch: int) -> None:
    """Let originates carrying ``epoch`` through: the owner calls it for a *fresh* epoch it holds in the DB.

    Call it once per epoch: when it raises, take a new epoch (compare-and-set) and arm that one, never
    this one again. After it returns, re-read the epoch from the database before any originate carries
    it (docs/fencing.md, "arming"): a takeover that bumped the epoch before this set is caught there.
    """
    await _set_and_confirm(client, key, str(epoch))


async def fence_out(client: AriRequester, key: str, new_epoch: int) -> None:
    """Refuse every originate of ``key`` from now on: the taker calls it after bumping the epoch in the DB.

    When it returns, any call of the fenced daemon that may still reach the carrier is in
    ``GET /channels`` or has its hangup record; an attempt with neither can never be dialled by it.
    Raises :class:`FenceError` (or another :class:`PbxError`): then nothing may be given back.
    """
    await _set_and_confirm(client, key, f"fenced-{new_epoch}")


async def _set_and_confirm(client: AriRequester, key: str, value: str) -> None:
    name = fence_variable(key)
    try:
        await client.request("POST", "/asterisk/variable", params={"variable": name, "value": value})
    except PbxRequestError as exc:
        raise FenceError(f"could not set {name}: HTTP {exc.pbx_status} {exc.body[:200]}") from exc
    now = await read_fence(client, key)
    if now != value:
        # Another writer in between (an old incarnation arming itself): the caller decides what to do.
        raise FenceError(f"{name} reads {now!r} right after setting it to {value!r}")
