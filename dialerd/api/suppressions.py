"""The suppression list routes of /api/v1 (do-not-call, per tenant: the API key's)."""

from __future__ import annotations

import tempfile
from typing import IO, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from dialerd.api import render
from dialerd.api.context import principal, services
from dialerd.api.forms import FORM_OVERHEAD, MAX_FIELD_BYTES, query, read_body, read_json_object
from dialerd.api.schemas import MAX_PAGE
from dialerd.domain.suppression import MAX_NUMBERS, check_reason
from dialerd.errors import InvalidInput, PayloadTooLarge
from dialerd.services.campaign_spec import parse_int, read_region
from dialerd.services.suppressions import AddResult

routes = web.RouteTableDef()

JSON_KEYS = ("numbers", "reason", "default_region")
FORM_FIELDS = ("file", "reason", "default_region")
MAX_JSON_BYTES = 1024 * 1024  # 10,000 numbers fit several times over
SPOOL_IN_MEMORY = 1024 * 1024


def _bad(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", error_id="invalid_field", field=field)


def _reason(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _bad("reason", "must be a string")
    try:
        return check_reason(raw)
    except ValueError as exc:
        raise _bad("reason", str(exc)) from None


@routes.post("/api/v1/suppressions")
async def add_suppressions(request: web.Request) -> web.Response:
    query(request, set())
    svc = services(request)
    who = principal(request)
    default = svc.settings.dialer_default_region
    if request.content_type == "application/json":
        data = read_json_object(await read_body(request, MAX_JSON_BYTES))
        unknown = sorted(set(data) - set(JSON_KEYS))
        if unknown:
            raise InvalidInput(f"unknown key {unknown[0]!r}; accepted: {', '.join(JSON_KEYS)}",
                               error_id="unknown_field", field=unknown[0])
        numbers = data.get("numbers")
        if not isinstance(numbers, list) or not numbers:
            raise _bad("numbers", "must be a non-empty array of phone numbers (strings)")
        if len(numbers) > MAX_NUMBERS:
            raise _bad("numbers", f"at most {MAX_NUMBERS} numbers per request")
        if not all(isinstance(n, str) for n in numbers):
            raise _bad("numbers", "every number must be a string")
        region = _region(data.get("default_region", ""), default)
        result = await svc.suppressions.add_numbers(who, numbers, _reason(data.get("reason", "")), region)
        return web.json_response(_added(result))
    if not request.content_type.startswith("multipart/form-data"):
        raise InvalidInput("suppressions take application/json ({\"numbers\": [...]}) or multipart/form-data "
                           f"(a CSV 'file'), got {request.content_type!r}", error_id="invalid_content_type")
    limit = svc.settings.upload_limit_bytes
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes; the file may be at most {limit} "
                              "bytes", limit_bytes=limit)
    values, spool = await _read_form(request, limit)
    try:
        region = _region(values.get("default_region", ""), default)
        result = await svc.suppressions.add_csv(who, spool, _reason(values.get("reason", "")), region)
    finally:
        spool.close()
    return web.json_response(_added(result))


def _region(raw: Any, default: str) -> str | None:
    if not isinstance(raw, str):
        raise _bad("default_region", "must be a string")
    return read_region("default_region", raw, default) or None


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], IO[bytes]]:
    values: dict[str, str] = {}
    spool: IO[bytes] | None = None
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise InvalidInput("nested multipart is not supported", error_id="invalid_form")
                name = part.name or ""
                if name not in FORM_FIELDS:
                    raise InvalidInput(f"unknown form field {name!r}; accepted: {', '.join(FORM_FIELDS)}",
                                       error_id="unknown_field", field=name)
                if name in values or (name == "file" and spool is not None):
                    raise _bad(name, "given more than once")
                if name == "file":
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
                    size = 0
                    while chunk := await part.read_chunk(64 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise PayloadTooLarge(f"file is larger than the limit of {limit} bytes",
                                                  limit_bytes=limit, field="file")
                        spool.write(chunk)
                    continue
                raw = await part.read(decode=False)
                if len(raw) > MAX_FIELD_BYTES:
                    raise _bad(name, f"longer than {MAX_FIELD_BYTES} bytes")
                try:
                    values[name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _bad(name, "is not UTF-8 text") from None
        except (ValueError, AssertionError, RuntimeError, HttpProcessingError, BadContentDispositionHeader,
                BadContentDispositionParam) as exc:
            raise InvalidInput(f"malformed multipart body: {exc}", error_id="invalid_form") from None
        except ConnectionResetError:
            raise InvalidInput("the request body was cut off (client disconnected)",
                               error_id="incomplete_body") from None
        if spool is None:
            raise InvalidInput("missing the 'file' CSV part (a column 'number' or 'phone')",
                               error_id="missing_file", field="file")
        spool.seek(0)
        return values, spool
    except BaseException:
        if spool is not None:
            spool.close()
        raise


def _added(result: AddResult) -> dict[str, Any]:
    return render.suppressions_added(result)


@routes.get("/api/v1/suppressions")
async def list_suppressions(request: web.Request) -> web.Response:
    q = query(request, {"number", "default_region", "limit", "offset"})
    limit = parse_int("limit", q.get("limit"), 100, 1, MAX_PAGE)
    offset = parse_int("offset", q.get("offset"), 0, 0, None)
    svc = services(request)
    number = q.get("number") or None
    region = _region(q.get("default_region", ""), svc.settings.dialer_default_region)
    rows, total = await svc.suppressions.list_entries(principal(request), number, region, limit, offset)
    return web.json_response(render.suppression_page(rows, total, limit, offset))


@routes.delete("/api/v1/suppressions/{number}")
async def delete_suppression(request: web.Request) -> web.Response:
    query(request, set())
    await services(request).suppressions.delete(principal(request), request.match_info["number"])
    return web.Response(status=204)
