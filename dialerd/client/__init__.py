"""Python client of the dialerd REST API: ``AsyncDialerd`` (asyncio) and ``Dialerd`` (blocking).

    from dialerd.client import Dialerd, ContactEvent, End, NotFound

    client = Dialerd()                                    # DIALERD_URL / DIALERD_API_KEY
    campaign = client.campaigns.create("contacts.csv", name="spring", default_region="US")
    print(campaign["id"], campaign["import"]["rows_rejected"])
    client.campaigns.start(campaign["id"])
    for event in client.campaigns.events(campaign["id"], last_event_id=0):
        if isinstance(event, ContactEvent):
            print(event.phone_number, event.status, event.reason)

Answers are the daemon's JSON as plain ``dict``s, typed for checkers by the ``TypedDict``s in
``dialerd.client.models`` (``Campaign``, ``ContactPage``, ...). Events are frozen dataclasses. Errors:
``DialerdApiError`` and its subclasses for error answers, ``DialerdConnectionError`` when no answer came.
Nothing happens at import time; each client reads the environment when it is built. aiohttp is
imported only when ``AsyncDialerd`` is first used, so the blocking client (and ``dialerctl``) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dialerd.client.errors import (
    Conflict,
    DialerdApiError,
    DialerdConnectionError,
    DialerdError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from dialerd.client.events import CampaignEvent, ContactEvent, End, Event, Snapshot, UnknownEvent
from dialerd.client.models import (
    Blocker,
    Campaign,
    CampaignPage,
    Contact,
    ContactCounts,
    ContactPage,
    ContactsAppended,
    CreateOptions,
    Explanation,
    ImportPage,
    ImportProblem,
    ImportReport,
    StartDeferred,
    WebhookState,
)
from dialerd.client.sync import Campaigns, Dialerd

if TYPE_CHECKING:
    from dialerd.client.aio import AsyncCampaigns, AsyncDialerd


def __getattr__(name: str) -> Any:
    if name in ("AsyncDialerd", "AsyncCampaigns"):
        from dialerd.client import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncCampaigns",
    "AsyncDialerd",
    "Campaign",
    "CampaignEvent",
    "CampaignPage",
    "Campaigns",
    "Conflict",
    "Contact",
    "ContactCounts",
    "ContactEvent",
    "ContactPage",
    "ContactsAppended",
    "CreateOptions",
    "DialerdApiError",
    "DialerdConnectionError",
    "DialerdError",
    "Dialerd",
    "End",
    "Event",
    "Explanation",
    "Blocker",
    "ImportPage",
    "ImportProblem",
    "ImportReport",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "Snapshot",
    "StartDeferred",
    "Unauthorized",
    "UnknownEvent",
    "WebhookState",
]
