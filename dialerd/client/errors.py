"""The client's exceptions: one hierarchy, mirroring the daemon's ``{"error", "error_id", "details"}`` body.

``DialerdApiError`` is raised for every non-2xx answer; the subclass is picked by HTTP status so callers
can ``except NotFound`` without comparing numbers. ``DialerdConnectionError`` is raised when no answer
arrived at all (refused, reset, timed out, or an event stream that could not be resumed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class DialerdError(Exception):
    """Base class of everything the client raises on purpose."""


class DialerdConnectionError(DialerdError):
    """The daemon could not be reached, or the connection broke and retrying did not help."""


class DialerdApiError(DialerdError):
    """The daemon answered with an error status.

    ``error_id`` is the daemon's stable machine code (``campaign_not_found``, ``invalid_field``, ...);
    ``details`` its structured extras (e.g. ``{"field": "name"}``).
    """

    def __init__(self, status: int, error_id: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{message} ({error_id}, HTTP {status})")
        self.status = status
        self.error_id = error_id
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class InvalidRequest(DialerdApiError):
    """400: a form field, query parameter or the CSV was refused."""


class Unauthorized(DialerdApiError):
    """401: missing or unknown API key."""


class NotFound(DialerdApiError):
    """404: unknown id (or another tenant's), or an unknown route."""


class Conflict(DialerdApiError):
    """409: the campaign's state does not allow the action, or a tenant cap would be exceeded."""


class PayloadTooLarge(DialerdApiError):
    """413: the contacts file is over the daemon's upload limit."""


_BY_STATUS: dict[int, type[DialerdApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def error_from_response(status: int, body: bytes) -> DialerdApiError:
    """Build the right ``DialerdApiError`` from an error answer, JSON or not (a proxy's HTML page)."""
    cls = _BY_STATUS.get(status, DialerdApiError)
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        details = parsed.get("details")
        return cls(
            status,
            str(parsed.get("error_id") or f"http_{status}"),
            parsed["error"],
            details if isinstance(details, dict) else None,
        )
    text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status} with an empty body"
    return cls(status, f"http_{status}", text)
