"""The one exception hierarchy dialerd raises across layers.

Every error carries an HTTP status and a stable ``error_id``; the API middleware renders
``{"error": message, "error_id": ..., "details": {...}}`` from it. Foreign exceptions are
translated into these at the boundary where they occur.
"""

from __future__ import annotations

from typing import Any


class DialerdError(Exception):
    """Base class: a problem with a human message and a machine code."""

    status: int = 500
    error_id: str = "internal_error"

    def __init__(self, message: str, *, error_id: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if error_id is not None:
            self.error_id = error_id
        self.details: dict[str, Any] = details


class InvalidInput(DialerdError):
    """A form field, query parameter or body that cannot be accepted (400)."""

    status = 400
    error_id = "invalid_input"


class InvalidCsv(InvalidInput):
    """The contacts file is refused as a whole (400)."""

    error_id = "invalid_csv"


class PayloadTooLarge(DialerdError):
    """The request body or the uploaded file is over the configured limit (413)."""

    status = 413
    error_id = "payload_too_large"


class Unauthorized(DialerdError):
    """Missing or unknown API key (401)."""

    status = 401
    error_id = "unauthorized"


class NotFound(DialerdError):
    """Unknown id, or an id that belongs to another tenant (404)."""

    status = 404
    error_id = "not_found"


class Conflict(DialerdError):
    """The resource is in a state that does not allow the action (409)."""

    status = 409
    error_id = "conflict"


class PbxUnavailable(DialerdError):
    """The PBX connection is down (503)."""

    status = 503
    error_id = "pbx_unavailable"


class ConfigError(DialerdError):
    """An invalid setting; the message names the key."""

    error_id = "invalid_config"


class StoreError(DialerdError):
    """The database failed (500)."""

    status = 500
    error_id = "database_error"
