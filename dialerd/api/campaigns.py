"""The campaign routes of /api/v1 (campaigns-api.md)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from dialerd.api import render
from dialerd.api.context import principal, services
from dialerd.api.forms import campaign_id, query, read_append_form, read_body, read_create_form, read_edit
from dialerd.api.schemas import MAX_PAGE  # the page bound the document states
from dialerd.domain.campaign import VISIBLE, CampaignStatus
from dialerd.domain.contact import ContactStatus
from dialerd.errors import InvalidInput
from dialerd.services import idempotency
from dialerd.services.campaign_spec import parse_int
from dialerd.services.idempotency import Answer
from dialerd.services.results import CSV_MEDIA_TYPE

log = logging.getLogger("dialerd.api")
routes = web.RouteTableDef()

MAX_PAGE_NUMBER = 10**9  # page * limit stays within what offset accepts
MAX_ACTION_BODY = 64 * 1024  # the actions take no body; a client may send a small one


def _page(q: dict[str, str], default: int) -> tuple[int, int]:
    limit = parse_int("limit", q.get("limit"), default, 1, MAX_PAGE)
    offset = parse_int("offset", q.get("offset"), 0, 0, None)
    return limit, offset


def _status(q: dict[str, str], allowed: Iterable[ContactStatus] | Iterable[CampaignStatus]) -> str | None:
    value = q.get("status")
    if value is None or value == "":
        return None
    names = [s.value for s in allowed]
    if value not in names:
        raise InvalidInput(f"status: unknown status {value!r}; one of {', '.join(names)}", error_id="invalid_field",
                           field="status")
    return value


NAME_SEARCH_MAX = 200  # a campaign name's own limit: a longer search could never match


def _name_search(q: dict[str, str]) -> str | None:
    """The ``name`` list filter: a substring, matched case-insensitively and literally."""
    value = q.get("name", "").strip()
    if not value:
        return None
    if len(value) > NAME_SEARCH_MAX or any(ord(ch) < 32 for ch in value):
        raise InvalidInput(f"name: must be 1-{NAME_SEARCH_MAX} printable characters (campaign names are)",
                           error_id="invalid_field", field="name")
    return value


@routes.get("/api/v1/call-limits")
async def call_limits(request: web.Request) -> web.Response:
    query(request, set())
    return web.json_response(render.call_limits(await services(request).limits.get(principal(request))))


@routes.get("/api/v1/campaigns")
async def list_campaigns(request: web.Request) -> web.Response:
    q = query(request, {"limit", "offset", "status", "name"})
    limit, offset = _page(q, 50)
    views, total = await services(request).campaigns.list_campaigns(
        principal(request), limit, offset, _status(q, VISIBLE), _name_search(q)
    )
    return web.json_response(
        {"campaigns": [render.campaign(v) for v in views], "total": total, "limit": limit, "offset": offset}
    )


def _answer(answer: Answer) -> web.Response:
    resp = web.Response(status=answer.status, text=answer.body, content_type="application/json")
    if answer.replayed:
        resp.headers[idempotency.REPLAYED_HEADER] = "true"
    return resp


@routes.post("/api/v1/campaigns")
async def create_campaign(request: web.Request) -> web.Response:
    query(request, set())
    svc = services(request)
    who = principal(request)
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    form = await read_create_form(request, svc.settings)

    async def work() -> tuple[int, dict[str, Any], str | None]:
        view = await svc.campaigns.create(who, form.spec, form.contacts)
        return 201, render.campaign_created(view), view.campaign.id

    with form.contacts:
        fingerprint = idempotency.request_hash(request.method, request.path, form.digest)
        return _answer(await svc.campaigns.idempotency.run(who.tenant_id, key, fingerprint, work))


@routes.patch("/api/v1/campaigns/{id}")
async def update_campaign(request: web.Request) -> web.Response:
    query(request, set())
    svc = services(request)
    changes, _raw = await read_edit(request, svc.settings)
    view = await svc.campaigns.update(principal(request), campaign_id(request), changes)
    return web.json_response(render.campaign(view))


@routes.get("/api/v1/campaigns/{id}/import")
async def get_import(request: web.Request) -> web.Response:
    q = query(request, {"limit", "offset"})
    limit, offset = _page(q, 100)
    campaign, problems, total = await services(request).campaigns.import_report(
        principal(request), campaign_id(request), limit, offset
    )
    return web.json_response(render.import_report(campaign, problems, total, limit, offset))


@routes.get("/api/v1/campaigns/{id}")
async def get_campaign(request: web.Request) -> web.Response:
    query(request, set())
    view = await services(request).campaigns.get(principal(request), campaign_id(request))
    return web.json_response(render.campaign(view))


@routes.get("/api/v1/campaigns/{id}/explain")
async def explain_campaign(request: web.Request) -> web.Response:
    query(request, set())
    answer = await services(request).explain.explain(principal(request), campaign_id(request))
    return web.json_response(render.explanation(answer))


@routes.get("/api/v1/campaigns/{id}/webhook")
async def webhook_state(request: web.Request) -> web.Response:
    query(request, set())
    url, state = await services(request).campaigns.webhook_state(principal(request), campaign_id(request))
    return web.json_response(render.webhook_state(url, state))


@routes.delete("/api/v1/campaigns/{id}")
async def delete_campaign(request: web.Request) -> web.Response:
    query(request, set())
    await services(request).campaigns.delete(principal(request), campaign_id(request))
    return web.Response(status=204)


CONTACT_INCLUDES = ("attempt_history",)  # what include= may add to each contact


def _include(q: dict[str, str]) -> set[str]:
    """The ``include`` parameter: comma-separated names of CONTACT_INCLUDES; any other is a 400."""
    names = {part.strip() for part in q.get("include", "").split(",") if part.strip()}
    unknown = sorted(names - set(CONTACT_INCLUDES))
    if unknown:
        raise InvalidInput(f"include: unknown value {unknown[0][:40]!r}; one of {', '.join(CONTACT_INCLUDES)}",
                           error_id="invalid_field", field="include")
    return names


CONTACT_FORMATS = ("json", "csv")  # format= of the contacts list; csv is the results export
PAGING = ("limit", "offset", "after_id", "page", "include")  # what the CSV export (every contact) takes none of


def _accept_q(accept: str, media_type: str) -> float | None:
    """The quality an Accept header gives ``media_type`` by name (wildcards aside); None if not named."""
    for item in accept.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        if name.lower() != media_type:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return max(0.0, min(1.0, float(value)))
                except ValueError:
                    return 0.0
        return 1.0
    return None


def _wants_csv(request: web.Request, q: dict[str, str]) -> bool:
    """``format=csv``, or without ``format`` an Accept header naming text/csv above application/json."""
    fmt = q.get("format", "")
    if fmt:
        if fmt not in CONTACT_FORMATS:
            raise InvalidInput(f"format: unknown format {fmt[:40]!r}; one of {', '.join(CONTACT_FORMATS)}",
                               error_id="invalid_field", field="format")
        return fmt == "csv"
    accept = request.headers.get("Accept", "")
    csv_q = _accept_q(accept, CSV_MEDIA_TYPE)
    if not csv_q:
        return False
    json_q = _accept_q(accept, "application/json")
    return json_q is None or csv_q > json_q


async def _export(request: web.Request, q: dict[str, str]) -> web.StreamResponse:
    """The results export: every contact (of ``status``) as CSV, streamed page by page."""
    given = [p for p in PAGING if q.get(p) not in (None, "")]
    if given:
        raise InvalidInput(f"{given[0]}: the CSV export has every contact; it takes no {', '.join(PAGING)}",
                           error_id="invalid_parameter", parameter=given[0])
    cid = campaign_id(request)
    chunks = await services(request).campaigns.results_csv(principal(request), cid, _status(q, ContactStatus))
    resp = web.StreamResponse(headers={
        "Content-Type": f"{CSV_MEDIA_TYPE}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{cid}.csv"',
        "Cache-Control": "no-store",
    })
    await resp.prepare(request)
    try:
        async for chunk in chunks:
            await resp.write(chunk)
    except ConnectionError:
        return resp  # the client went away
    except Exception:
        # The status line is sent: no JSON error can follow. Cut the connection, so the client sees a
        # truncated download (no final chunk) rather than a complete-looking file.
        log.exception("export failed", extra={"action": "export", "campaign_id": cid})
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


@routes.get("/api/v1/campaigns/{id}/contacts")
async def list_contacts(request: web.Request) -> web.StreamResponse:
    q = query(request, {"limit", "offset", "status", "after_id", "page", "include", "format"})
    if _wants_csv(request, q):
        return await _export(request, q)
    limit, offset = _page(q, 100)
    include = _include(q)
    # after_id: keyset paging (the previous page's next_after_id); stays fast deep into big campaigns.
    after_id = None if q.get("after_id") in (None, "") else parse_int("after_id", q["after_id"], 0, 0, None)
    if after_id is not None and offset:
        raise InvalidInput("after_id and offset cannot be combined; page with one of them",
                           error_id="invalid_field", field="after_id")
    # page: the reference API's spelling, 0-based pages of ``limit`` (100) contacts; offset = page * limit.
    page = None if q.get("page") in (None, "") else parse_int("page", q["page"], 0, 0, MAX_PAGE_NUMBER)
    if page is not None:
        if q.get("offset") not in (None, "") or after_id is not None:
            other = "offset" if q.get("offset") not in (None, "") else "after_id"
            raise InvalidInput(f"page and {other} cannot be combined; page with one of them",
                               error_id="invalid_field", field="page")
        offset = page * limit
    contacts, total = await services(request).campaigns.list_contacts(
        principal(request), campaign_id(request), _status(q, ContactStatus), limit, offset, after_id
    )
    more = len(contacts) == limit if after_id is not None else offset + len(contacts) < total
    history = await services(request).campaigns.attempt_history(contacts) if "attempt_history" in include else None
    body: dict[str, Any] = {
        "contacts": [render.contact(c, None if history is None else history.get(c.id or 0, [])) for c in contacts],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(contacts) if more and after_id is None else None,
        "next_after_id": contacts[-1].id if more and contacts else None,
    }
    if page is not None:
        body["page"] = page
        body["next_page"] = page + 1 if more else None
    return web.json_response(body)


@routes.post("/api/v1/campaigns/{id}/contacts")
async def append_contacts(request: web.Request) -> web.Response:
    query(request, set())
    svc = services(request)
    who = principal(request)
    cid = campaign_id(request)
    await svc.campaigns.require(who, cid)  # 404 before the upload is read
    form = await read_append_form(request, svc.settings)
    with form.contacts:
        view = await svc.campaigns.append(who, cid, form.contacts, phone_column=form.phone_column,
                                          encoding=form.encoding)
    return web.json_response(render.contacts_appended(view))


async def _action(request: web.Request, name: str) -> web.Response:
    query(request, set())
    svc = services(request).campaigns
    who = principal(request)
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    cid = campaign_id(request)
    body = await read_body(request, MAX_ACTION_BODY) if key is not None else b""

    async def work() -> tuple[int, dict[str, Any], str | None]:
        view = await getattr(svc, name)(who, cid)
        return 200, render.campaign(view), cid

    fingerprint = idempotency.request_hash(request.method, request.path, hashlib.sha256(body).hexdigest())
    return _answer(await svc.idempotency.run(who.tenant_id, key, fingerprint, work))


@routes.post("/api/v1/campaigns/{id}/start")
async def start(request: web.Request) -> web.Response:
    return await _action(request, "start")


@routes.post("/api/v1/campaigns/{id}/pause")
async def pause(request: web.Request) -> web.Response:
    return await _action(request, "pause")


@routes.post("/api/v1/campaigns/{id}/resume")
async def resume(request: web.Request) -> web.Response:
    return await _action(request, "resume")


@routes.post("/api/v1/campaigns/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    return await _action(request, "stop")
