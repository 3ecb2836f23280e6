"""Reading and validating request input: the create form (multipart) and query parameters.

Every problem is a 400 (or 413 for size) naming the field; nothing is written before the whole form
has been read and checked.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO

import phonenumbers
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from dialerd.errors import InvalidInput, NotFound, PayloadTooLarge
from dialerd.pbx.base import Destination
from dialerd.services.campaigns import CampaignSpec
from dialerd.services.csv_text import text_codec
from dialerd.settings import Settings
from dialerd.store.tables import utcnow

FIELDS = {
    "name", "caller_id", "destination", "max_concurrent_calls", "retries_per_contact", "retry_delay_seconds",
    "ring_timeout_seconds", "scheduled_at", "default_region", "phone_column", "encoding",
}
ALIASES = {"agent_id": "destination", "phone_number_id": "caller_id"}  # the reference API's names
FORM_OVERHEAD = 64 * 1024  # room for the text fields and multipart framing beside the file
MAX_FIELD_BYTES = 4096
SPOOL_IN_MEMORY = 1024 * 1024


def bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", error_id="invalid_field", field=field)


def parse_int(field: str, raw: str | None, default: int, lo: int, hi: int | None) -> int:
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() refuses (a 500 before).
    if not text.isascii() or not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())) or len(text) > 12:
        raise bad(field, f"must be an integer, got {raw[:40]!r}")
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        raise bad(field, f"must be between {lo} and {hi}, got {value}" if hi is not None else f"must be >= {lo}, got {value}")
    return value


def parse_time(field: str, raw: str) -> datetime:
    text = raw.strip()
    try:
        # RFC 3339 requires the date, a 'T' (or space) and an offset; fromisoformat accepts 'Z' on 3.11.
        if len(text) < 20 or text[10] not in "Tt ":
            raise ValueError
        value = datetime.fromisoformat(text.replace("t", "T").replace("z", "Z"))
    except (ValueError, IndexError):
        raise bad(field, f"must be an RFC 3339 timestamp like 2030-01-31T09:00:00Z, got {raw[:60]!r}") from None
    if value.tzinfo is None:
        raise bad(field, "needs a UTC offset (Z or +hh:mm)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise bad(field, f"is out of range, got {raw[:60]!r}") from None


async def read_create_form(request: web.Request, settings: Settings) -> tuple[CampaignSpec, IO[bytes]]:
    """Read the multipart create request, spooling the CSV; raise 400/413 naming the problem."""
    limit = settings.upload_limit_bytes
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD:
        raise PayloadTooLarge(
            f"request body is {request.content_length} bytes; the contacts file may be at most {limit} bytes",
            limit_bytes=limit,
        )
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidInput(
            f"create takes multipart/form-data (a 'contacts' CSV file plus form fields), got {request.content_type!r}",
            error_id="invalid_content_type",
        )
    values: dict[str, str] = {}
    spool: IO[bytes] | None = None
    try:
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise InvalidInput("nested multipart is not supported", error_id="invalid_form")
                name = part.name or ""
                if name == "contacts":
                    if spool is not None:
                        raise bad("contacts", "given more than once")
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
                    await _spool(part, spool, limit)
                    continue
                field = ALIASES.get(name, name)
                if field not in FIELDS:
                    raise InvalidInput(
                        f"unknown form field {name!r}; accepted: contacts, {', '.join(sorted(FIELDS | set(ALIASES)))}",
                        error_id="unknown_field", field=name,
                    )
                if field in values:
                    raise bad(name, "given more than once" if name == field else f"given together with {field}")
                raw = await part.read(decode=False)
                if len(raw) > MAX_FIELD_BYTES:
                    raise bad(name, f"longer than {MAX_FIELD_BYTES} bytes")
                try:
                    values[field] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad(name, "is not UTF-8 text") from None
        # HttpProcessingError: a part's headers do not parse (e.g. a control character in its name).
        # BadContentDisposition*: aiohttp *warns* about a Content-Disposition it cannot parse (and then
        # treats it as absent); where warnings are errors (our tests) the warning is raised here instead
        # and used to escape as a 500 (test_fuzz_api).
        except (ValueError, AssertionError, RuntimeError, HttpProcessingError, BadContentDispositionHeader,
                BadContentDispositionParam) as exc:
            raise InvalidInput(f"malformed multipart body: {exc}", error_id="invalid_form") from None
        except ConnectionResetError:
            # The client went away mid-upload: aiohttp fails the body read. Nobody reads this answer, but
            # it must not be logged as an unhandled server error with a traceback (test_abusive_clients).
            raise InvalidInput("the request body was cut off (client disconnected)",
                               error_id="incomplete_body") from None
        if spool is None:
            raise InvalidInput("missing the 'contacts' CSV file part", error_id="missing_contacts", field="contacts")
        spec = build_spec(values, settings)
        spool.seek(0)
        return spec, spool
    except BaseException:
        if spool is not None:
            spool.close()
        raise


async def _spool(part: BodyPartReader, spool: IO[bytes], limit: int) -> None:
    size = 0
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"contacts file is larger than the limit of {limit} bytes", limit_bytes=limit, field="contacts"
            )
        spool.write(chunk)


def build_spec(values: Mapping[str, str], settings: Settings) -> CampaignSpec:
    """Validate the text fields of a create request."""
    name = (values.get("name") or "").strip()
    if not name:
        raise bad("name", "is required")
    if len(name) > 200 or any(ord(ch) < 32 for ch in name):
        raise bad("name", "must be 1-200 printable characters")
    caller_id = (values.get("caller_id") or settings.dialer_default_caller_id).strip()
    if len(caller_id) > 80 or any(ord(ch) < 32 or ch in ";\\" for ch in caller_id):
        raise bad("caller_id", "must be at most 80 printable characters without ';' or '\\'")
    try:
        destination = Destination.parse(values.get("destination") or settings.dialer_default_destination)
    except ValueError as exc:
        raise bad("destination", str(exc)) from None
    # Stasis arguments are free text: bound them to the stored column and keep control characters out.
    if len(str(destination)) > 200 or any(ord(ch) < 32 for ch in str(destination)):
        raise bad("destination", "must be at most 200 printable characters")
    region = (values.get("default_region") or settings.dialer_default_region).strip().upper()
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise bad("default_region", f"{region!r} is not an ISO 3166 country code phonenumbers knows (e.g. US, GB, DE)")
    scheduled_at = None
    if values.get("scheduled_at", "").strip():
        scheduled_at = parse_time("scheduled_at", values["scheduled_at"])
        if scheduled_at <= utcnow():
            raise bad("scheduled_at", "is in the past")
    phone_column = (values.get("phone_column") or "").strip() or None
    if phone_column is not None and (len(phone_column) > 200 or any(ord(ch) < 32 for ch in phone_column)):
        raise bad("phone_column", "must be a header of the contacts file, at most 200 printable characters")
    encoding = (values.get("encoding") or "").strip() or None
    if encoding is not None:
        encoding = text_codec(encoding)  # 400 naming the field for a name Python does not know
    return CampaignSpec(
        name=name,
        caller_id=caller_id,
        destination=destination,
        max_concurrent_calls=parse_int("max_concurrent_calls", values.get("max_concurrent_calls"), 5, 1, 100),
        retries_per_contact=parse_int("retries_per_contact", values.get("retries_per_contact"), 0, 0, 5),
        retry_delay_seconds=parse_int("retry_delay_seconds", values.get("retry_delay_seconds"), 300, 60, 7 * 86400),
        ring_timeout_seconds=parse_int(
            "ring_timeout_seconds", values.get("ring_timeout_seconds"), settings.dialer_ring_timeout, 5, 300
        ),
        default_region=region,
        scheduled_at=scheduled_at,
        phone_column=phone_column,
        encoding=encoding,
    )


def campaign_id(request: web.Request) -> str:
    """The ``{id}`` of the path; an id no campaign can have is a 404 without asking the database."""
    value = request.match_info["id"]
    # PostgreSQL text cannot hold NUL: "/campaigns/%00" used to fail in asyncpg and answer 500.
    if "\x00" in value:
        raise NotFound(f"campaign {value} not found", error_id="campaign_not_found")
    return value


def query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones."""
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            raise InvalidInput(
                f"unknown query parameter {key!r}; accepted: {', '.join(sorted(allowed)) or 'none'}",
                error_id="unknown_parameter", parameter=key,
            )
        if key in out:
            raise InvalidInput(f"query parameter {key!r} given more than once", error_id="invalid_parameter",
                               parameter=key)
        out[key] = value
    return out
