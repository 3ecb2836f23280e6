"""What handlers reach through the aiohttp app: the wired services and the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dialerd.services.auth import Authenticator, Principal
from dialerd.services.campaigns import CampaignService
from dialerd.services.events import EventHub
from dialerd.services.explain import ExplainService
from dialerd.services.limits import CallLimits
from dialerd.services.suppressions import SuppressionService
from dialerd.settings import Settings

if TYPE_CHECKING:
    from dialerd.services.metrics import Metrics


@dataclass
class Services:
    settings: Settings
    auth: Authenticator
    campaigns: CampaignService
    explain: ExplainService
    hub: EventHub
    metrics: Metrics
    limits: CallLimits  # GET /api/v1/call-limits
    # The daemon's health check: the GET /health body, shaped as api/schemas.py's Health.
    health: Callable[[], Awaitable[dict[str, Any]]]
    suppressions: SuppressionService


SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    who: Principal = request[PRINCIPAL]
    return who
