"""Errors the PBX adapters raise for requests other than originate (which raises OriginateError)."""

from __future__ import annotations

from dialerd.errors import PbxUnavailable


class PbxError(PbxUnavailable):
    """A PBX request failed: refused, timed out, or the connection is down (503, ``pbx_error``)."""

    error_id = "pbx_error"


class PbxRequestError(PbxError):
    """The PBX answered a request with an error status (ARI HTTP status, AMI ``Response: Error``)."""

    def __init__(self, message: str, *, status: int = 0, body: str = "") -> None:
        super().__init__(message, pbx_status=status, body=body[:500])
        self.pbx_status = status
        self.body = body
