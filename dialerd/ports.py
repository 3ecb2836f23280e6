"""The ports: what the services need from a PBX and from the call store, as Protocols.

Services depend on these; adapters (``pbx/ari.py``, ``pbx/ami.py``, ``pbx/fake.py``, ``store/``) implement
them. The PBX adapters report call progress to a :class:`PbxSink` with plain synchronous callbacks: the
adapter's event reader must never wait on the dispatcher (ARI drops a websocket consumer that stalls for
100 ms), so the sink only queues.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from dialerd.domain.call import CallEvent, ChannelLookup, OriginateRequest, Skipped
from dialerd.domain.contact import ContactStatus

if TYPE_CHECKING:
    # The call store speaks in the store's rows (they are the entities today); for type checking only,
    # so importing the PBX port (as every adapter does) loads nothing of the store.
    from dialerd.domain.campaign import CampaignStatus
    from dialerd.store.tables import Attempt, Campaign, Contact, Event, Tenant


class OriginateError(Exception):
    """The PBX did not accept the originate request.

    ``maybe_dialled`` is True when the outcome is unknown (timeout, connection lost mid-request):
    the call may exist, so the caller must reconcile instead of retrying blindly.
    """

    def __init__(self, message: str, *, maybe_dialled: bool = False) -> None:
        super().__init__(message)
        self.maybe_dialled = maybe_dialled


class PbxSink(Protocol):
    """Receives what the adapter sees. Both methods must return at once (queue, never await)."""

    def call_event(self, event: CallEvent) -> None: ...

    def connection_changed(self, connected: bool) -> None: ...


class FenceSeat(Protocol):
    """This daemon's epochs for the PBX fence, kept in the database (``services/cluster.py``); the ARI
    adapter sets the PBX's side (``pbx/fence.py``, docs/fencing.md)."""

    @property
    def key(self) -> str:
        """The fence key: names the Asterisk global the dialplan compares each originate's epoch with."""
        ...

    @property
    def formats(self) -> str:
        """The codec the fence's Local channel is pinned to (the trunk's)."""
        ...

    async def arm(self, set_fence: Callable[[int], Awaitable[None]]) -> int:
        """Take a new epoch by compare-and-set, ``set_fence`` it on the PBX, read it back from the database;
        returns the epoch every originate carries from then on. Raises ``Fenced`` (taken over: stop),
        ``StoreError``, or what ``set_fence`` raised (then the next connect arms a new epoch)."""
        ...


class PeerPbx(Protocol):
    """Another daemon's PBX, as a takeover reaches it (``pbx/peer.py``): what it knows of a channel."""

    async def lookup(self, channel_id: str) -> ChannelLookup: ...

    async def forget(self, channel_id: str) -> None:
        """Delete the channel's hangup record once its end is recorded."""
        ...

    async def fence_out(self, key: str, new_epoch: int) -> None:
        """Make that PBX refuse every originate its daemon sends from now on (``pbx/fence.py``); raises
        ``PbxError`` when it could not be set and read back (then nothing may be given back)."""
        ...

    async def close(self) -> None: ...


class Pbx(Protocol):
    """A PBX that can originate calls and report their progress."""

    name: str
    takeovers: int  # times another client took our ARI application (ApplicationReplaced); 0 off ARI
    # Requests sent to the PBX, by kind: ARI "POST /channels/{id}", AMI "Originate" (/metrics, benchmarks).
    request_counts: Counter[str]

    @property
    def connected(self) -> bool:
        """True while the event connection is up and originating is safe."""
        ...

    @property
    def held_reason(self) -> str | None:
        """Why originating is not safe now: ``pbx_down``, ``ari_app_replaced``; None while connected."""
        ...

    @property
    def last_error(self) -> str | None:
        """What is wrong with the PBX connection, as one sentence for operators; None while all is well."""
        ...

    async def start(self, sink: PbxSink) -> None:
        """Connect and keep reconnecting (with backoff) in an owned task until ``close``."""
        ...

    async def check_app_free(self) -> str | None:
        """Before the first connect: why the event application must not be taken (one sentence), or None."""
        ...

    async def wait_connected(self) -> None:
        """Return once the event connection is up (wrap in ``asyncio.timeout``). Call after ``start``."""
        ...

    async def close(self) -> None: ...

    async def originate(self, request: OriginateRequest) -> str:
        """Place the call; return the PBX's channel name. Raise OriginateError if not accepted."""
        ...

    async def lookup(self, channel_id: str) -> ChannelLookup:
        """Tell what the PBX knows about ``channel_id`` (live, ended with a result, or unknown)."""
        ...

    async def count_channels(self) -> int:
        """How many channels the PBX has now (its own count; used by tests and health)."""
        ...

    async def forget(self, channel_id: str) -> None:
        """Drop the PBX's stored result for ``channel_id`` (called once the outcome is recorded)."""
        ...


class CampaignReads(Protocol):
    """The tenant and campaign reads the dispatcher and the follower make besides the calls' own."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]:
        """Attempts created in ``[start, end)`` across the tenant's campaigns, and their answered talk seconds."""
        ...

    async def get_campaign(self, campaign_id: str, tenant_id: str | None = None) -> Campaign | None: ...

    async def campaigns_with_status(self, *statuses: CampaignStatus) -> list[Campaign]: ...


class CallStore(Protocol):
    """The reads and writes of each call: due contacts, its attempt, the attempt's transitions.

    Two implementations (``store/sql_calls.py`` ``SqlCalls`` over SQLAlchemy, ``store/sqlite_calls.py``
    ``SqliteCalls`` on the sqlite3 driver), one chosen when the store is built. Every write that moves
    an attempt is guarded: ``record_transition`` changes nothing (and returns None) unless the attempt
    is in one of ``only_from``, so a duplicate or late event is harmless.
    """

    async def next_due_contacts(self, campaign_id: str, now: datetime, limit: int) -> list[Contact]:
        """Pending contacts whose next attempt is due and that no hold keeps back at ``now``, oldest first."""
        ...

    async def next_retry_time(self, campaign_id: str) -> datetime | None:
        """When the campaign's earliest waiting contact may be claimed (a retry, the end of a hold);
        None if none is waiting."""
        ...

    async def unfinished_contacts(self, campaign_id: str) -> int:
        """Contacts not yet in a final status."""
        ...

    async def begin_attempt(
        self, contact: Contact, channel_id: str, caller_id: str | None = None,
    ) -> Attempt | Skipped | None:
        """Commit a new dialling attempt under ``channel_id``, recording the ``caller_id`` it goes out with
        (None: the PBX decides); None if the contact was taken meanwhile, or
        if the claim gate (calling hours, frequency cap) holds it back: its ``blocked_reason`` and
        ``next_eligible_at`` are then written in the same transaction.

        In the same transaction, the contact's number is checked against its tenant's suppression list:
        if it is listed, the contact becomes ``skipped`` (its ``skipped`` event appended) and ``Skipped``
        is returned; nothing may be dialled then.
        """
        ...

    async def give_back_attempt(self, channel_id: str) -> bool:
        """Mark a dialling attempt never dialled and its contact pending again; False if not dialling."""
        ...

    async def get_attempt(self, channel_id: str) -> Attempt | None: ...

    async def attempts_in_flight(self, node_id: str | None = None) -> list[Attempt]:
        """Attempts in flight, oldest first; with ``node_id``, only those that daemon placed (and those
        placed before several daemons existed, which have none)."""
        ...

    async def record_transition(
        self,
        channel_id: str,
        *,
        attempt_state: str,
        attempt_values: dict[str, Any],
        contact_status: ContactStatus,
        contact_values: dict[str, Any],
        payload: dict[str, Any],
        only_from: Sequence[str],
        opt_out: bool = False,
    ) -> tuple[Attempt, Event] | None:
        """Move an attempt and its contact on and append the event, in one transaction; with ``opt_out``,
        the contact's number joins its tenant's suppression list (source ``opt_out``) in it too."""
        ...


class DispatchStore(CallStore, CampaignReads, Protocol):
    """What the dispatcher and the call follower are handed (``store.repo.Store`` implements it): the
    call store and the campaign reads."""
