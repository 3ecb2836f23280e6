"""Prometheus metrics: GET /metrics, the HTTP latency middleware, and the daemon's live figures.

Everything lives in one ``CollectorRegistry`` handed in by the composition root (never the global
default registry), so two daemons in one process (tests) do not share or clash. Call figures are read
from the dispatcher and the event hub at scrape time: nothing on the dialling path waits for metrics.
The per caller id figures (``dialerd_caller_id_*``) are the store's: the handler reads them (one grouped
read, ``Metrics.caller_id_counts``) before the registry is rendered, so they survive restarts as the
campaign's JSON does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dialerd.domain.caller_id import CallerIdStat
from dialerd.domain.contact import FailureReason
from dialerd.ports import Pbx
from dialerd.services.dispatcher import Dispatcher
from dialerd.services.events import EventHub

# Every reason an attempt can end with, exported from the start so rate() works from the first call.
OUTCOME_REASONS = ("completed", *(r.value for r in FailureReason))
HELD_REASONS = ("pbx_down", "ari_app_replaced")  # dialerd_dialling_held label values, all exported
UNMATCHED_ROUTE = "unmatched"  # 404/405: one label value, whatever the URL (no cardinality blow-up)
CLIENT_GONE = "499"  # handler cancelled before it answered (nginx's code for it)


class WebhookCounts(Protocol):
    """This daemon's webhook tries so far (services/webhooks.WebhookDelivery)."""

    delivered: int
    failed: int
    dead: int


class DaemonCollector(Collector):
    """Reads the dispatcher, the PBX connection and the SSE hub at scrape time."""

    def __init__(self, dispatcher: Dispatcher, hub: EventHub, pbx: Pbx, webhooks: WebhookCounts | None = None) -> None:
        self.dispatcher = dispatcher
        self.hub = hub
        self.pbx = pbx
        self.webhooks = webhooks
        self.caller_ids: dict[str, list[CallerIdStat]] = {}  # set by the handler before each scrape

    def collect(self) -> Iterable[Metric]:
        d = self.dispatcher
        originations = CounterMetricFamily(
            "dialerd_originations", "Calls handed to the PBX (originate accepted), by tenant id", labels=["tenant"]
        )
        for tenant, n in sorted(d.originations_by_tenant.items()):
            originations.add_metric([tenant], n)
        yield originations

        outcomes = CounterMetricFamily(
            "dialerd_call_outcomes",
            "Attempts that ended, by outcome (completed or the failure reason)",
            labels=["reason"],
        )
        for reason in sorted({*OUTCOME_REASONS, *d.outcomes}):
            outcomes.add_metric([reason], d.outcomes.get(reason, 0))
        yield outcomes

        in_flight = GaugeMetricFamily("dialerd_calls_in_flight", "Calls up now, by tenant id", labels=["tenant"])
        saturation = GaugeMetricFamily(
            "dialerd_tenant_cap_saturation",
            "Calls in flight / the tenant's concurrent_max (1 = at the cap)",
            labels=["tenant"],
        )
        # Tenants appear once the dispatcher has dialled for them (or found their calls in flight).
        for tenant, concurrent_max in sorted(d.tenant_caps().items()):
            calls = d.tenant_in_flight(tenant)
            in_flight.add_metric([tenant], calls)
            saturation.add_metric([tenant], calls / concurrent_max if concurrent_max else 0.0)
        yield in_flight
        yield saturation

        yield GaugeMetricFamily(
            "dialerd_pbx_connected",
            "1 while the PBX connection is up, else 0",
            value=1.0 if self.pbx.connected else 0.0,
        )
        held = GaugeMetricFamily(
            "dialerd_dialling_held",
            "1 while dialling is held for this reason (pbx_down, ari_app_replaced), else 0",
            labels=["reason"],
        )
        held_now = d.dialling_held
        for name in HELD_REASONS:
            held.add_metric([name], 1.0 if held_now == name else 0.0)
        yield held
        yield CounterMetricFamily(
            "dialerd_ari_app_takeovers",
            "Times another client took the ARI application from this daemon (ApplicationReplaced)",
            value=self.pbx.takeovers,
        )
        sent = CounterMetricFamily("dialerd_pbx_requests", "Requests sent to the PBX, by kind (ARI: method and "
                                   "route, e.g. POST /channels/{id}; AMI: the action)", labels=["request"])
        for kind, n in sorted(self.pbx.request_counts.items()):
            sent.add_metric([kind], n)
        yield sent
        yield GaugeMetricFamily(
            "dialerd_sse_subscribers", "Open Server-Sent Events streams", value=self.hub.subscriber_count()
        )
        yield from self._caller_id_metrics()
        if self.webhooks is not None:
            tries = CounterMetricFamily("dialerd_webhook_deliveries", "Webhook delivery tries by result: "
                                        "delivered (2xx), failed (retried later), dead (given up)", labels=["result"])
            tries.add_metric(["delivered"], self.webhooks.delivered)
            tries.add_metric(["failed"], self.webhooks.failed)
            tries.add_metric(["dead"], self.webhooks.dead)
            yield tries


    def _caller_id_metrics(self) -> Iterable[Metric]:
        labels = ["campaign", "caller_id"]
        families = (
            (CounterMetricFamily("dialerd_caller_id_attempts", "Attempts by campaign and the caller id they went "
                                 "out with (running or paused campaigns, and those ended within 24 h)",
                                 labels=labels), "attempts"),
            (CounterMetricFamily("dialerd_caller_id_answered", "Answered attempts by campaign and caller id",
                                 labels=labels), "answered"),
            (CounterMetricFamily("dialerd_caller_id_rejected", "Attempts the far end rejected (SIP 603/608) by "
                                 "campaign and caller id", labels=labels), "rejected"),
        )
        for family, figure in families:
            for campaign_id, stats in sorted(self.caller_ids.items()):
                for s in stats:
                    family.add_metric([campaign_id, s.caller_id], getattr(s, figure))
            yield family


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


class Telemetry:
    """The registry, its collectors, and what the web app needs: a middleware and a handler."""

    def __init__(
        self, registry: CollectorRegistry, *, dispatcher: Dispatcher, hub: EventHub, pbx: Pbx,
        caller_ids: Callable[[], Awaitable[dict[str, list[CallerIdStat]]]] | None = None,
        webhooks: WebhookCounts | None = None,
    ) -> None:
        self.registry = registry
        self.http_latency = Histogram(
            "dialerd_http_request_duration_seconds",
            "HTTP request latency by route (the path template) and status; an SSE stream counts its whole life",
            labelnames=["method", "route", "status"],
            registry=registry,
        )
        collector = DaemonCollector(dispatcher, hub, pbx, webhooks)
        registry.register(collector)
        render = make_aiohttp_handler(registry)

        async def handler(request: web.Request) -> web.StreamResponse:
            if caller_ids is not None:
                collector.caller_ids = await caller_ids()
            return await render(request)

        self.handler: Handler = handler
        self.middleware: Middleware = self._latency_middleware()

    def _latency_middleware(self) -> Middleware:
        histogram = self.http_latency

        @web.middleware
        async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            # Outermost middleware: it sees the status the error middleware turned an exception into.
            started = time.perf_counter()
            status = "500"
            try:
                response = await handler(request)
                status = str(response.status)
                return response
            except web.HTTPException as exc:  # only redirects get past the error middleware
                status = str(exc.status)
                raise
            except asyncio.CancelledError:
                status = CLIENT_GONE
                raise
            finally:
                histogram.labels(request.method, _route(request), status).observe(time.perf_counter() - started)

        return latency_middleware
