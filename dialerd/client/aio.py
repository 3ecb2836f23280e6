"""The asyncio client, on aiohttp. Usage:

    async with AsyncDialerd() as client:  # DIALERD_URL, DIALERD_API_KEY
        campaign = await client.campaigns.create("contacts.csv", name="spring")
        await client.campaigns.start(campaign["id"])
        async for event in client.campaigns.events(campaign["id"], last_event_id=0):
            ...

Same methods, arguments, answers and errors as the blocking ``Dialerd``.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import IO, Any, TypeVar, Unpack

import aiohttp

from dialerd.client import _http
from dialerd.client._http import DEFAULT_TIMEOUT, Call, ClientConfig, Contacts, CsvSource
from dialerd.client.errors import DialerdApiError, DialerdConnectionError, error_from_response
from dialerd.client.events import Event
from dialerd.client.models import (
    CallLimits,
    Campaign,
    CampaignPage,
    Contact,
    ContactPage,
    ContactsAppended,
    CreateOptions,
    Explanation,
    ImportPage,
    SuppressionPage,
    SuppressionsAdded,
    WebhookState,
)
from dialerd.client.sse import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_RECONNECTS, EventStream

T = TypeVar("T")


class AsyncDialerd:
    """An asyncio client of one dialerd daemon.

    ``url`` and ``api_key`` default to ``DIALERD_URL`` and ``DIALERD_API_KEY``. ``timeout`` bounds each
    request as a whole (not event streams, which use their own idle timeout). Pass ``session`` to share
    an aiohttp session you own; otherwise the client opens one on first use and ``close()`` (or leaving
    ``async with``) closes it.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(url, api_key, timeout)
        self._session = session
        self._owns_session = session is None
        self.campaigns = AsyncCampaigns(self)
        self.suppressions = AsyncSuppressions(self)

    @property
    def url(self) -> str:
        return self.config.url

    async def __aenter__(self) -> AsyncDialerd:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _current_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session given to AsyncDialerd is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, call: Call[T]) -> T:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self._current_session().request(
                call.method,
                call.url(self.config.url),
                # A file object, not raw bytes: aiohttp streams it instead of warning about the loop.
                data=io.BytesIO(call.body) if call.body is not None else None,
                headers=self.config.headers(call.headers),
                timeout=timeout,
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DialerdConnectionError(
                f"{call.method} {call.path} to {self.config.url} failed: {exc or type(exc).__name__}"
            ) from exc
        return call.result(status, body)

    async def _retrying(self, call: Call[T], retries: int) -> T:
        """``call`` (which carries an Idempotency-Key) sent again after a lost answer or while still in progress."""
        lost = 0
        waits = 0
        started = time.monotonic()
        while True:
            try:
                return await self._call(call)
            except DialerdConnectionError:
                lost += 1
                if lost > retries:
                    raise
                delay = _http.retry_delay(lost)
            except DialerdApiError as exc:
                if exc.error_id != _http.IN_PROGRESS or time.monotonic() - started > _http.IN_PROGRESS_WAIT:
                    raise
                waits += 1
                delay = _http.retry_delay(waits)
            await asyncio.sleep(delay)

    async def call_limits(self) -> CallLimits:
        """``GET /api/v1/call-limits``: the key's tenant limits (0: no limit) and its live usage
        (``in_flight``, ``calls_last_minute``, ``calls_today``, ``minutes_today``)."""
        return await self._call(_http.call_limits())

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (no key needed): the daemon's and the PBX connection's state."""

        def parse(data: Any) -> dict[str, Any]:
            return dict(data)

        try:
            return await self._call(Call("GET", "/health", parse))
        except DialerdApiError as exc:
            if exc.status == 503:  # a dead database still answers with the health document
                return {"status": "error", "error": exc.message}
            raise


class AsyncCampaigns:
    """``client.campaigns``: the campaign endpoints. Answers are plain dicts typed by ``models``."""

    def __init__(self, client: AsyncDialerd) -> None:
        self._client = client

    async def list(
        self, status: str | None = None, limit: int | None = None, offset: int | None = None, *,
        name: str | None = None,
    ) -> CampaignPage:
        """A page of campaigns, newest first; ``name`` keeps those whose name contains it (any case)."""
        return await self._client._call(_http.list_campaigns(status, limit, offset, name))

    async def create(
        self,
        contacts: Contacts,
        *,
        name: str,
        idempotency_key: str | None = None,
        retries: int = _http.CREATE_RETRIES,
        **options: Unpack[CreateOptions],
    ) -> Campaign:
        """Upload a contacts CSV (path, bytes or binary file; or a list of contact dicts, sent as JSON) and
        create a draft campaign.

        ``options`` are the create form's other fields (``CreateOptions``: caller_id, destination,
        max_concurrent_calls, scheduled_at, default_region, ...). The answer's ``import`` holds the import
        report, rejected rows included (all of them: ``import_report``). ``phone_column`` names the column to dial (default: the recognised phone
        columns); ``encoding`` the file's encoding (default: BOM, UTF-8 or detection). Every create carries
        an ``Idempotency-Key`` (``idempotency_key``, or a new UUID): one that times out or loses its
        connection is sent again with the same key up to ``retries`` times, and waits while the daemon says
        the first is still running, so it yields one campaign.
        """
        fields = _http.create_fields(name=name, **options)
        key = idempotency_key or _http.new_idempotency_key()
        if isinstance(contacts, list):
            call = _http.create_campaign_json(fields, contacts, key)
        else:
            if isinstance(contacts, bytes | bytearray):
                data, filename = _http.read_contacts(contacts)
            else:
                data, filename = await asyncio.to_thread(_http.read_contacts, contacts)
            call = _http.create_campaign(fields, data, filename, key)
        return await self._client._retrying(call, retries)

    async def get(self, id: str) -> Campaign:
        return await self._client._call(_http.get_campaign(id))

    async def delete(self, id: str) -> None:
        await self._client._call(_http.delete_campaign(id))

    async def list_contacts(
        self, id: str, status: str | None = None, limit: int | None = None, offset: int | None = None,
        page: int | None = None, include: str | None = None,
    ) -> ContactPage:
        """A page of contacts, by ``offset`` or by ``page`` (0-based pages of ``limit``, default 100).
        ``include="attempt_history"`` adds each contact's attempts (``attempt_history``)."""
        return await self._client._call(_http.list_contacts(id, status, limit, offset, page, include))

    async def iter_contacts(
        self, id: str, status: str | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[Contact]:
        """Every contact (optionally of one status), page after page, each once.

        Pages are offsets into the filtered list: while a campaign runs, a contact that leaves the
        filtered status between two pages can be missed. Export after the campaign ended for exact lists.
        """
        seen: set[int] = set()
        offset: int | None = 0
        while offset is not None:
            page = await self.list_contacts(id, status, page_size, offset)
            for contact in page["contacts"]:
                if contact["id"] not in seen:
                    seen.add(contact["id"])
                    yield contact
            offset = page["next_offset"]

    async def append(
        self, id: str, contacts: CsvSource, *, phone_column: str | None = None, encoding: str | None = None,
    ) -> ContactsAppended:
        """Add the contacts of a CSV to a campaign; see ``Campaigns.append``."""
        data, filename = await asyncio.to_thread(_http.read_contacts, contacts)
        return await self._client._call(_http.append_contacts(id, data, filename, phone_column, encoding))

    async def export_csv(self, id: str, target: IO[bytes] | IO[str], *, status: str | None = None) -> int:
        """Stream the results export into ``target`` (a binary or text file object; written as the chunks
        arrive); returns the bytes received. See ``Campaigns.export_csv``."""
        client = self._client
        url = _http.export_url(client.config.url, id, status)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.config.timeout,
                                        sock_read=client.config.timeout)
        decoder = codecs.getincrementaldecoder("utf-8")()
        size = 0
        try:
            async with client._current_session().get(
                url, headers=client.config.headers({"Accept": _http.CSV_MEDIA_TYPE}), timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise error_from_response(resp.status, await resp.read())
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    _http.write_chunk(target, chunk, decoder)
                    size += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:  # ClientPayloadError: cut off half-way
            raise DialerdConnectionError(f"GET {url}: the export failed after {size} bytes: {exc}") from exc
        _http.finish_text(target, decoder)
        return size

    async def _act(self, id: str, action: str, idempotency_key: str | None) -> Campaign:
        key = idempotency_key or _http.new_idempotency_key()
        return await self._client._retrying(_http.campaign_action(id, action, key), _http.CREATE_RETRIES)

    async def start(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        """Each action carries an ``Idempotency-Key`` (given or new) and is retried with it when it times out."""
        return await self._act(id, "start", idempotency_key)

    async def pause(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return await self._act(id, "pause", idempotency_key)

    async def resume(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return await self._act(id, "resume", idempotency_key)

    async def stop(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return await self._act(id, "stop", idempotency_key)

    async def update(
        self,
        id: str,
        *,
        name: str | None = None,
        max_concurrent_calls: int | None = None,
        retries_per_contact: int | None = None,
        retry_delay_seconds: int | None = None,
        ring_timeout_seconds: int | None = None,
        caller_id: str | None = None,
        destination: str | None = None,
        retry_rules: str | None = None,
        calling_hours: str | None = None,
        timezone: str | None = None,
        caller_id_strategy: str | None = None,
        amd: str | None = None,
        on_machine: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Campaign:
        """``PATCH``: change the settings given while the campaign is draft, scheduled or paused
        (``retry_rules=""`` removes the rules; ``webhook_url=""`` with ``webhook_secret=""`` removes the
        webhook). ``webhook_secret`` is write-only: no answer ever carries it."""
        return await self._client._call(_http.update_campaign(id, {
            "name": name, "max_concurrent_calls": max_concurrent_calls, "retries_per_contact": retries_per_contact,
            "retry_delay_seconds": retry_delay_seconds, "ring_timeout_seconds": ring_timeout_seconds,
            "caller_id": caller_id, "destination": destination, "retry_rules": retry_rules,
            "calling_hours": calling_hours, "timezone": timezone, "caller_id_strategy": caller_id_strategy,
            "amd": amd, "on_machine": on_machine, "webhook_url": webhook_url, "webhook_secret": webhook_secret,
        }))

    async def webhook(self, id: str) -> WebhookState:
        """``GET .../webhook``: how far the campaign's webhook got: ``url`` (null without one),
        ``delivered_through`` (the last event id delivered or given up), ``pending``, ``dead``, ``last_error``,
        ``last_attempt_at`` and ``next_attempt_at`` (docs/webhooks.md)."""
        return await self._client._call(_http.webhook_state(id))

    async def explain(self, id: str) -> Explanation:
        """Why the campaign is (not) dialling now: ``pending``, ``eligible_now``, ``dialling`` and ``blocked_by``."""
        return await self._client._call(_http.explain(id))

    async def import_report(self, id: str, limit: int | None = None, offset: int | None = None) -> ImportPage:
        """The stored import report and a page of every rejected row."""
        return await self._client._call(_http.get_import(id, limit, offset))

    async def events(
        self,
        id: str,
        last_event_id: int | None = None,
        *,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> AsyncIterator[Event]:
        """The campaign's live events, ending after ``End``.

        ``last_event_id=None`` starts live (from now); ``0`` replays the campaign's whole history first;
        ``n`` resumes after event ``n``. A dropped or silent (``idle_timeout``) connection is reopened with
        ``Last-Event-ID`` after a growing delay (the server's ``retry`` hint, doubling, at most
        ``max_reconnects`` times in a row); nothing is lost or repeated. Raises ``DialerdConnectionError``
        when reconnecting fails, and ``DialerdApiError`` (e.g. ``NotFound``) when the daemon refuses.
        """
        client = self._client
        stream = EventStream(id, last_event_id, max_reconnects=max_reconnects, reconnect_delay=reconnect_delay)
        url = _http.events_url(client.config.url, id)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.config.timeout, sock_read=idle_timeout)
        while True:
            cause: BaseException | None = None
            try:
                async with client._current_session().get(
                    url, headers=client.config.headers(stream.request_headers()), timeout=timeout
                ) as resp:
                    if resp.status != 200:
                        raise error_from_response(resp.status, await resp.read())
                    stream.connected()
                    async for chunk in resp.content.iter_any():
                        for event in stream.feed(chunk):
                            yield event
                        if stream.ended:
                            return
            except (aiohttp.ClientError, TimeoutError, DialerdApiError) as exc:
                cause = exc
            await asyncio.sleep(stream.lost(cause))


class AsyncSuppressions:
    """``client.suppressions``: the tenant's suppression list (do-not-call)."""

    def __init__(self, client: AsyncDialerd) -> None:
        self._client = client

    async def add(
        self, numbers: list[str] | CsvSource, *, reason: str | None = None, default_region: str | None = None,
    ) -> SuppressionsAdded:
        """Add numbers: a list of strings (sent as JSON), or a CSV (path, bytes or binary file) with a column
        ``number`` or ``phone``. Bad numbers come back one by one in ``rejected``."""
        if isinstance(numbers, list):
            return await self._client._call(_http.add_suppressions(numbers, reason, default_region))
        data, filename = await asyncio.to_thread(_http.read_contacts, numbers)
        return await self._client._call(_http.add_suppressions_csv(data, filename, reason, default_region))

    async def list(
        self, number: str | None = None, *, default_region: str | None = None, limit: int | None = None,
        offset: int | None = None,
    ) -> SuppressionPage:
        """A page of the list, newest first; ``number`` looks one up (normalised like contacts' numbers)."""
        return await self._client._call(_http.list_suppressions(number, default_region, limit, offset))

    async def delete(self, number: str) -> None:
        """Take an E.164 number off the list (DialerdApiError 404 suppression_not_found when not on it)."""
        await self._client._call(_http.delete_suppression(number))
