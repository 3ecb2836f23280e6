"""Errors the PBX adapters raise for requests other than originate (which raises OriginateError)."""

from __future__ import annotations

from dialerd.errors import DialerdError, PbxUnavailable

EXIT_APP_IN_USE = 75  # EX_TEMPFAIL: `dialerd serve` refused, the ARI app is held by a live client


class PbxError(PbxUnavailable):
    """A PBX request failed: refused, timed out, or the connection is down (503, ``pbx_error``)."""

    error_id = "pbx_error"


class PbxRequestError(PbxError):
    """The PBX answered a request with an error status (ARI HTTP status, AMI ``Response: Error``)."""

    def __init__(self, message: str, *, status: int = 0, body: str = "") -> None:
        super().__init__(message, pbx_status=status, body=body[:500])
        self.pbx_status = status
        self.body = body


class AppInUse(DialerdError):
    """At start: the ARI application is held by a live client; dialerd will not take it over."""

    error_id = "ari_app_in_use"
