"""The aiohttp application: routes, the error middleware and the auth middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from dialerd.api import campaigns, dashboard, events, openapi, render, suppressions
from dialerd.api.context import PRINCIPAL, SERVICES, Services, services
from dialerd.errors import DialerdError, Unauthorized

if TYPE_CHECKING:
    from dialerd.api.prometheus import Telemetry

log = logging.getLogger("dialerd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = {"/health", "/api/v1/openapi.json", "/metrics"}


def _json_error(status: int, message: str, error_id: str, details: dict[str, object] | None = None) -> web.Response:
    return web.json_response(render.error(message, error_id, details), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place exceptions become JSON errors ({"error", "error_id", "details"})."""
    started = time.perf_counter()
    try:
        return await handler(request)
    except DialerdError as exc:
        if exc.status >= 500:
            log.error("request failed", exc_info=exc, extra={"action": "http", "path": request.path})
        response = _json_error(exc.status, exc.message, exc.error_id, exc.details)
        retry_after = exc.details.get("retry_after_seconds") if exc.details else None
        if isinstance(retry_after, int):  # e.g. idempotency_key_in_progress: when to ask again
            response.headers["Retry-After"] = str(retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        ids = {404: "route_not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        response = _json_error(exc.status, message, ids.get(exc.status, f"http_{exc.status}"))
        if "Allow" in exc.headers:  # a 405 must say which methods are allowed
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", extra={"action": "http", "path": request.path})
        return _json_error(500, "internal error; see the dialerd log", "internal_error")
    finally:
        elapsed = time.perf_counter() - started
        if elapsed > 1.0 and not request.path.endswith("/events"):
            log.warning("slow request", extra={"action": "http", "path": request.path, "seconds": round(elapsed, 3)})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.path not in PUBLIC_PATHS:
        header = request.headers.get("Authorization")
        # aiohttp hands non-UTF-8 header bytes over as surrogates, which neither hashing nor the database
        # can encode (a 500 before); keys are ASCII, so such a header can only be a wrong key.
        if header is not None and not header.isascii():
            raise Unauthorized("invalid API key")
        request[PRINCIPAL] = await services(request).auth.authenticate(header)
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    body = await services(request).health()
    # Degraded (PBX down, database fine) still answers 200: the API works. Only a dead database is 503.
    return web.json_response(body, status=503 if body.get("status") == "error" else 200)


def build_app(svc: Services, telemetry: Telemetry | None = None) -> web.Application:
    # client_max_size bounds non-streamed bodies; the create form streams and checks its own limit.
    # The latency middleware goes outermost so it records the status the error middleware produced.
    outer = [telemetry.middleware] if telemetry is not None else []
    app = web.Application(
        middlewares=[*outer, error_middleware, auth_middleware], client_max_size=1024 * 1024
    )
    app[SERVICES] = svc
    app.router.add_get("/health", health)
    app.add_routes(campaigns.routes)
    app.add_routes(events.routes)
    app.add_routes(suppressions.routes)
    app.add_routes(openapi.routes)
    app.add_routes(dashboard.routes)
    if telemetry is not None:
        app.router.add_get("/metrics", telemetry.handler)
    return app
