"""What the async and the sync client share: settings, the requests of each endpoint, multipart encoding.

Each endpoint is described once as a ``Call`` (method, path, query, body, how to read the answer); the
two transports (aiohttp in ``aio.py``, urllib in ``sync.py``) only move bytes. Nothing here does I/O
except ``read_contacts``, which the async client runs in a thread.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, Unpack, cast
from urllib.parse import quote, urlencode

from dialerd import timestamps
from dialerd.client.errors import DialerdApiError, error_from_response
from dialerd.client.models import (
    CREATE_FIELDS,
    EDITABLE,
    INT_FIELDS,
    CallLimits,
    Campaign,
    CampaignPage,
    ContactPage,
    ContactsAppended,
    CreateOptions,
    Explanation,
    ImportPage,
    SuppressionPage,
    SuppressionsAdded,
    WebhookState,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "dialerd-client/0.1"
API = "/api/v1/campaigns"

CsvSource = str | os.PathLike[str] | bytes | bytearray | IO[bytes]
Contacts = CsvSource | list[dict[str, object]]
"""A contacts CSV: a path (``str`` is always a path), the bytes themselves, or a binary file object; or a
list of contacts (``{"phone_number": ..., other keys: custom fields}``), sent as a JSON body."""


@dataclass(frozen=True)
class ClientConfig:
    """Where the daemon is and how to authenticate; built once per client."""

    url: str
    api_key: str | None
    timeout: float

    @classmethod
    def resolve(
        cls, url: str | None, api_key: str | None, timeout: float, env: Mapping[str, str] | None = None
    ) -> ClientConfig:
        """Explicit arguments win; otherwise ``DIALERD_URL`` / ``DIALERD_API_KEY``; otherwise the default URL."""
        source = os.environ if env is None else env
        base = (url or source.get("DIALERD_URL") or DEFAULT_URL).strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"dialerd URL must start with http:// or https://, got {base!r}")
        key = api_key if api_key is not None else source.get("DIALERD_API_KEY")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        return cls(base, key or None, timeout)

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        out = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        if extra:
            out.update(extra)
        return out


def _json_body(status: int, body: bytes) -> Any:
    if status == 204 or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:  # e.g. a proxy's HTML page with a 200
        raise DialerdApiError(status, "invalid_response", f"expected JSON, got {body[:120]!r}") from None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to turn a 2xx answer into ``T``."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def url(self, base: str) -> str:
        return base + self.path + ("?" + urlencode(self.params) if self.params else "")

    def result(self, status: int, body: bytes) -> T:
        """The parsed answer, or the matching ``DialerdApiError`` for an error status."""
        if not 200 <= status < 300:
            raise error_from_response(status, body)
        return self.parse(_json_body(status, body))


def _as(_: type[T]) -> Callable[[Any], T]:
    return lambda data: cast(T, data)


def _none(_: Any) -> None:
    return None


def campaign_path(campaign_id: str, suffix: str = "") -> str:
    if not isinstance(campaign_id, str) or not campaign_id:
        raise ValueError("campaign id must be a non-empty string")
    # Quoted whole: an id never adds path segments ("../x" stays inside the campaigns collection).
    return f"{API}/{quote(campaign_id, safe='')}{suffix}"


def _params(**values: object) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in values.items() if v is not None)


def list_campaigns(
    status: str | None, limit: int | None, offset: int | None, name: str | None = None
) -> Call[CampaignPage]:
    return Call("GET", API, _as(CampaignPage), _params(status=status, name=name, limit=limit, offset=offset))


def call_limits() -> Call[CallLimits]:
    return Call("GET", "/api/v1/call-limits", _as(CallLimits))


def get_campaign(campaign_id: str) -> Call[Campaign]:
    return Call("GET", campaign_path(campaign_id), _as(Campaign))


def delete_campaign(campaign_id: str) -> Call[None]:
    return Call("DELETE", campaign_path(campaign_id), _none)


IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
IN_PROGRESS = "idempotency_key_in_progress"  # the error_id of a retry that came while the first still runs
CREATE_RETRIES = 3  # a create that timed out or lost its connection is sent again this often, same key
IN_PROGRESS_WAIT = 300.0  # seconds to wait for a first request still running (a big import) to finish


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _keyed(key: str | None) -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: key} if key else {}


def retry_delay(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...) of a keyed request: 0.5, 1, 2, 4, then 5."""
    return float(min(5.0, 0.5 * 2 ** (attempt - 1)))


def campaign_action(campaign_id: str, action: str, idempotency_key: str | None = None) -> Call[Campaign]:
    return Call("POST", campaign_path(campaign_id, f"/{action}"), _as(Campaign), headers=_keyed(idempotency_key))


def update_campaign(campaign_id: str, changes: Mapping[str, object]) -> Call[Campaign]:
    """PATCH: the fields given (``None`` values are left out)."""
    body = {k: v for k, v in changes.items() if v is not None}
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise ValueError(f"cannot change {', '.join(unknown)}; changeable: {', '.join(EDITABLE)}")
    if not body:
        raise ValueError("nothing to change")
    return Call("PATCH", campaign_path(campaign_id), _as(Campaign), body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})


def get_import(campaign_id: str, limit: int | None, offset: int | None) -> Call[ImportPage]:
    return Call("GET", campaign_path(campaign_id, "/import"), _as(ImportPage), _params(limit=limit, offset=offset))


def webhook_state(campaign_id: str) -> Call[WebhookState]:
    return Call("GET", campaign_path(campaign_id, "/webhook"), _as(WebhookState))


def explain(campaign_id: str) -> Call[Explanation]:
    return Call("GET", campaign_path(campaign_id, "/explain"), _as(Explanation))


def list_contacts(
    campaign_id: str, status: str | None, limit: int | None, offset: int | None, page: int | None = None,
    include: str | None = None,
) -> Call[ContactPage]:
    return Call(
        "GET",
        campaign_path(campaign_id, "/contacts"),
        _as(ContactPage),
        _params(status=status, limit=limit, offset=offset, page=page, include=include),
    )


def append_contacts(
    campaign_id: str, data: bytes, filename: str, phone_column: str | None, encoding: str | None,
) -> Call[ContactsAppended]:
    """POST /campaigns/{id}/contacts: a CSV (multipart ``contacts``), and how to read it."""
    fields = {k: v for k, v in (("phone_column", phone_column), ("encoding", encoding)) if v is not None}
    body, content_type = encode_multipart(fields, "contacts", filename, data)
    return Call("POST", campaign_path(campaign_id, "/contacts"), _as(ContactsAppended), body=body,
                headers={"Content-Type": content_type})


CSV_MEDIA_TYPE = "text/csv"


def export_url(base: str, campaign_id: str, status: str | None) -> str:
    """The results export (``format=csv``): every contact of the campaign (of ``status``) as CSV."""
    query = urlencode(_params(format="csv", status=status))
    return base + campaign_path(campaign_id, "/contacts") + "?" + query


def write_chunk(target: IO[bytes] | IO[str], chunk: bytes, decoder: Any) -> None:
    """Write a chunk of the export to a binary file, or decoded to a text file (``decoder``: an incremental
    UTF-8 decoder, so a character split between two chunks is written whole)."""
    if isinstance(target, io.TextIOBase):
        cast(IO[str], target).write(decoder.decode(chunk))
    else:
        cast(IO[bytes], target).write(chunk)


def finish_text(target: IO[bytes] | IO[str], decoder: Any) -> None:
    if isinstance(target, io.TextIOBase):
        cast(IO[str], target).write(decoder.decode(b"", final=True))


def events_url(base: str, campaign_id: str) -> str:
    return base + campaign_path(campaign_id, "/events")


def rfc3339(value: datetime | str) -> str:
    """``scheduled_at`` as the daemon wants it; a datetime must carry its time zone."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("scheduled_at must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return timestamps.rfc3339(value)


def create_fields(*, name: str, **options: Unpack[CreateOptions]) -> dict[str, str]:
    """The form fields of create, in the declaration's order; ``None`` leaves a field out so the daemon's
    default applies."""
    unknown = sorted(set(options) - set(CREATE_FIELDS))
    if unknown:
        raise TypeError(f"create() got unexpected keyword arguments: {', '.join(unknown)}")
    values: dict[str, object] = {"name": name, **options}
    if values.get("scheduled_at") is not None:
        values["scheduled_at"] = rfc3339(cast(datetime | str, values["scheduled_at"]))
    return {k: str(values[k]) for k in CREATE_FIELDS if values.get(k) is not None}


def read_contacts(contacts: CsvSource) -> tuple[bytes, str]:
    """The CSV bytes and a file name for the upload. Blocking for paths and files."""
    if isinstance(contacts, bytes | bytearray):
        return bytes(contacts), "contacts.csv"
    if isinstance(contacts, str | os.PathLike):
        path = Path(contacts)
        return path.read_bytes(), path.name
    data = contacts.read()
    if isinstance(data, str):  # a file opened in text mode; be forgiving
        data = data.encode("utf-8")
    name = getattr(contacts, "name", None)
    return data, Path(name).name if isinstance(name, str) and name else "contacts.csv"


def _quoted(value: str) -> str:
    # RFC 7578: names are quoted strings; drop what would break out of the header line.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def encode_multipart(fields: Mapping[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body (text fields, then the file) and its Content-Type."""
    boundary = "dialerd-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode()
            + value.encode("utf-8")
            + b"\r\n"
        )
    safe_name = filename if filename.isascii() else "contacts.csv"
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(file_field)}"; '
        f'filename="{_quoted(safe_name)}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def create_campaign(
    fields: Mapping[str, str], data: bytes, filename: str, idempotency_key: str | None = None
) -> Call[Campaign]:
    body, content_type = encode_multipart(fields, "contacts", filename, data)
    return Call("POST", API, _as(Campaign), body=body,
                headers={"Content-Type": content_type, **_keyed(idempotency_key)})


def create_campaign_json(
    fields: Mapping[str, str], contacts: Sequence[Mapping[str, object]], idempotency_key: str | None = None
) -> Call[Campaign]:
    """The JSON create body: the fields (integers as numbers) and the contacts inline."""
    values: dict[str, object] = {k: int(v) if k in INT_FIELDS else v for k, v in fields.items()}
    body = json.dumps({**values, "contacts": [dict(c) for c in contacts]}).encode()
    return Call("POST", API, _as(Campaign), body=body,
                headers={"Content-Type": "application/json", **_keyed(idempotency_key)})



SUPPRESSIONS = "/api/v1/suppressions"


def add_suppressions(numbers: Sequence[str], reason: str | None, default_region: str | None) -> Call[SuppressionsAdded]:
    """POST /suppressions with JSON numbers (source ``api``)."""
    if isinstance(numbers, str):
        raise ValueError("numbers must be a list of phone numbers, not one string")
    body: dict[str, object] = {"numbers": list(numbers)}
    if reason is not None:
        body["reason"] = reason
    if default_region is not None:
        body["default_region"] = default_region
    return Call("POST", SUPPRESSIONS, _as(SuppressionsAdded), body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})


def add_suppressions_csv(data: bytes, filename: str, reason: str | None,
                         default_region: str | None) -> Call[SuppressionsAdded]:
    """POST /suppressions with a CSV file (a column ``number`` or ``phone``; source ``import``)."""
    fields = {k: v for k, v in (("reason", reason), ("default_region", default_region)) if v is not None}
    body, content_type = encode_multipart(fields, "file", filename, data)
    return Call("POST", SUPPRESSIONS, _as(SuppressionsAdded), body=body, headers={"Content-Type": content_type})


def list_suppressions(number: str | None, default_region: str | None, limit: int | None,
                      offset: int | None) -> Call[SuppressionPage]:
    return Call("GET", SUPPRESSIONS, _as(SuppressionPage),
                _params(number=number, default_region=default_region, limit=limit, offset=offset))


def delete_suppression(number: str) -> Call[None]:
    if not isinstance(number, str) or not number:
        raise ValueError("number must be a non-empty string (E.164)")
    return Call("DELETE", f"{SUPPRESSIONS}/{quote(number, safe='')}", _none)
