"""The blocking client, on ``urllib.request``: no event loop, no thread, nothing to close.

    client = Dialerd()                             # DIALERD_URL, DIALERD_API_KEY
    campaign = client.campaigns.create("contacts.csv", name="spring")
    client.campaigns.start(campaign["id"])
    for event in client.campaigns.events(campaign["id"], last_event_id=0):
        ...

Same methods, arguments, answers and errors as ``AsyncDialerd``. Proxies from the environment are
ignored, as aiohttp does by default, so both clients reach the same place.
"""

from __future__ import annotations

import codecs
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO, Any, TypeVar, Unpack

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
CHUNK = 64 * 1024
_NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError and socket timeouts are OSErrors


class Dialerd:
    """A blocking client of one dialerd daemon.

    ``url`` and ``api_key`` default to ``DIALERD_URL`` and ``DIALERD_API_KEY``. ``timeout`` bounds
    connecting and each read of a request. Usable as a context manager for symmetry with the async
    client; there is nothing to release.
    """

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.config = ClientConfig.resolve(url, api_key, timeout)
        # Our own opener, not urlopen's module-wide one: no shared state, no environment proxies.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.campaigns = Campaigns(self)
        self.suppressions = Suppressions(self)

    @property
    def url(self) -> str:
        return self.config.url

    def __enter__(self) -> Dialerd:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (urllib does not keep connections); here for symmetry."""

    def _open(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> http.client.HTTPResponse | urllib.error.HTTPError:
        """Send a request; return the response whatever its status; raise only for network failures."""
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        try:
            resp = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc  # an HTTPError is the error response itself
        except _NETWORK_ERRORS as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DialerdConnectionError(f"{method} {url} failed: {reason or type(exc).__name__}") from exc
        assert isinstance(resp, http.client.HTTPResponse)
        return resp

    def _call(self, call: Call[T]) -> T:
        resp = self._open(
            call.method,
            call.url(self.config.url),
            call.body,
            self.config.headers(call.headers),
            self.config.timeout,
        )
        try:
            with resp:
                body = resp.read()
        except _NETWORK_ERRORS as exc:
            raise DialerdConnectionError(f"{call.method} {call.path}: reading the answer failed: {exc}") from exc
        return call.result(resp.status or 0, body)

    def _retrying(self, call: Call[T], retries: int) -> T:
        """``call`` (which carries an Idempotency-Key) sent again after a lost answer or while still in progress."""
        lost = 0
        waits = 0
        started = time.monotonic()
        while True:
            try:
                return self._call(call)
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
            time.sleep(delay)

    def call_limits(self) -> CallLimits:
        """``GET /api/v1/call-limits``: the key's tenant limits (0: no limit) and its live usage
        (``in_flight``, ``calls_last_minute``, ``calls_today``, ``minutes_today``)."""
        return self._call(_http.call_limits())

    def health(self) -> dict[str, Any]:
        """``GET /health`` (no key needed): the daemon's and the PBX connection's state."""

        def parse(data: Any) -> dict[str, Any]:
            return dict(data)

        try:
            return self._call(Call("GET", "/health", parse))
        except DialerdApiError as exc:
            if exc.status == 503:
                return {"status": "error", "error": exc.message}
            raise


class Campaigns:
    """``client.campaigns``: the campaign endpoints. Answers are plain dicts typed by ``models``."""

    def __init__(self, client: Dialerd) -> None:
        self._client = client

    def list(
        self, status: str | None = None, limit: int | None = None, offset: int | None = None, *,
        name: str | None = None,
    ) -> CampaignPage:
        """A page of campaigns, newest first; ``name`` keeps those whose name contains it (any case)."""
        return self._client._call(_http.list_campaigns(status, limit, offset, name))

    def create(
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
            data, filename = _http.read_contacts(contacts)
            call = _http.create_campaign(fields, data, filename, key)
        return self._client._retrying(call, retries)

    def get(self, id: str) -> Campaign:
        return self._client._call(_http.get_campaign(id))

    def delete(self, id: str) -> None:
        self._client._call(_http.delete_campaign(id))

    def list_contacts(
        self, id: str, status: str | None = None, limit: int | None = None, offset: int | None = None,
        page: int | None = None, include: str | None = None,
    ) -> ContactPage:
        """A page of contacts, by ``offset`` or by ``page`` (0-based pages of ``limit``, default 100).
        ``include="attempt_history"`` adds each contact's attempts (``attempt_history``)."""
        return self._client._call(_http.list_contacts(id, status, limit, offset, page, include))

    def iter_contacts(self, id: str, status: str | None = None, *, page_size: int = 1000) -> Iterator[Contact]:
        """Every contact (optionally of one status), page after page, each once.

        Pages are offsets into the filtered list: while a campaign runs, a contact that leaves the
        filtered status between two pages can be missed. Export after the campaign ended for exact lists.
        """
        seen: set[int] = set()
        offset: int | None = 0
        while offset is not None:
            page = self.list_contacts(id, status, page_size, offset)
            for contact in page["contacts"]:
                if contact["id"] not in seen:
                    seen.add(contact["id"])
                    yield contact
            offset = page["next_offset"]

    def append(
        self, id: str, contacts: CsvSource, *, phone_column: str | None = None, encoding: str | None = None,
    ) -> ContactsAppended:
        """Add the contacts of a CSV (path, bytes or binary file) to a draft, scheduled, paused or running
        campaign, by the create's rules. The answer's ``import`` is the file's report (``duplicates``
        includes numbers already in the campaign; ``contacts`` the contacts added) and ``contacts`` the
        campaign's counts. ``Conflict`` (409 campaign_not_appendable) once it is completed or failed."""
        data, filename = _http.read_contacts(contacts)
        return self._client._call(_http.append_contacts(id, data, filename, phone_column, encoding))

    def export_csv(self, id: str, target: IO[bytes] | IO[str], *, status: str | None = None) -> int:
        """Stream the results export (every contact, of ``status`` if given, as the daemon's CSV) into
        ``target``, a binary or text file object; returns the bytes received. Raises
        ``DialerdConnectionError`` if the download is cut off (the daemon failed half-way): ``target`` then
        holds a partial file."""
        client = self._client
        url = _http.export_url(client.config.url, id, status)
        headers = client.config.headers({"Accept": _http.CSV_MEDIA_TYPE})
        resp = client._open("GET", url, None, headers, client.config.timeout)
        decoder = codecs.getincrementaldecoder("utf-8")()
        size = 0
        try:
            with resp:
                if isinstance(resp, urllib.error.HTTPError) or resp.status != 200:
                    raise error_from_response(resp.status or 0, resp.read())
                while chunk := resp.read1(CHUNK):
                    _http.write_chunk(target, chunk, decoder)
                    size += len(chunk)
        except _NETWORK_ERRORS as exc:  # IncompleteRead: the daemon cut the download short
            raise DialerdConnectionError(f"GET {url}: the export was cut off after {size} bytes: {exc}") from exc
        _http.finish_text(target, decoder)
        return size

    def _act(self, id: str, action: str, idempotency_key: str | None) -> Campaign:
        key = idempotency_key or _http.new_idempotency_key()
        return self._client._retrying(_http.campaign_action(id, action, key), _http.CREATE_RETRIES)

    def start(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        """Each action carries an ``Idempotency-Key`` (given or new) and is retried with it when it times out."""
        return self._act(id, "start", idempotency_key)

    def pause(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return self._act(id, "pause", idempotency_key)

    def resume(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return self._act(id, "resume", idempotency_key)

    def stop(self, id: str, *, idempotency_key: str | None = None) -> Campaign:
        return self._act(id, "stop", idempotency_key)

    def update(
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
        return self._client._call(_http.update_campaign(id, {
            "name": name, "max_concurrent_calls": max_concurrent_calls, "retries_per_contact": retries_per_contact,
            "retry_delay_seconds": retry_delay_seconds, "ring_timeout_seconds": ring_timeout_seconds,
            "caller_id": caller_id, "destination": destination, "retry_rules": retry_rules,
            "calling_hours": calling_hours, "timezone": timezone, "caller_id_strategy": caller_id_strategy,
            "amd": amd, "on_machine": on_machine, "webhook_url": webhook_url, "webhook_secret": webhook_secret,
        }))

    def webhook(self, id: str) -> WebhookState:
        """``GET .../webhook``: how far the campaign's webhook got: ``url`` (null without one),
        ``delivered_through`` (the last event id delivered or given up), ``pending``, ``dead``, ``last_error``,
        ``last_attempt_at`` and ``next_attempt_at`` (docs/webhooks.md)."""
        return self._client._call(_http.webhook_state(id))

    def explain(self, id: str) -> Explanation:
        """Why the campaign is (not) dialling now: ``pending``, ``eligible_now``, ``dialling`` and ``blocked_by``."""
        return self._client._call(_http.explain(id))

    def import_report(self, id: str, limit: int | None = None, offset: int | None = None) -> ImportPage:
        """The stored import report and a page of every rejected row."""
        return self._client._call(_http.get_import(id, limit, offset))

    def events(
        self,
        id: str,
        last_event_id: int | None = None,
        *,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> Iterator[Event]:
        """The campaign's live events, ending after ``End``; see ``AsyncCampaigns.events``."""
        client = self._client
        stream = EventStream(id, last_event_id, max_reconnects=max_reconnects, reconnect_delay=reconnect_delay)
        url = _http.events_url(client.config.url, id)
        while True:
            cause: BaseException | None = None
            try:
                # The socket timeout applies to every read: it is the idle timeout of the stream.
                resp = client._open(
                    "GET", url, None, client.config.headers(stream.request_headers()), idle_timeout
                )
                with resp:
                    if isinstance(resp, urllib.error.HTTPError) or resp.status != 200:
                        raise error_from_response(resp.status or 0, resp.read())
                    stream.connected()
                    while chunk := resp.read1(CHUNK):
                        yield from stream.feed(chunk)
                        if stream.ended:
                            return
            except (*_NETWORK_ERRORS, DialerdConnectionError, DialerdApiError) as exc:
                cause = exc
            time.sleep(stream.lost(cause))


class Suppressions:
    """``client.suppressions``: the tenant's suppression list (do-not-call)."""

    def __init__(self, client: Dialerd) -> None:
        self._client = client

    def add(
        self, numbers: list[str] | CsvSource, *, reason: str | None = None, default_region: str | None = None,
    ) -> SuppressionsAdded:
        """Add numbers: a list of strings (sent as JSON), or a CSV (path, bytes or binary file) with a column
        ``number`` or ``phone``. Bad numbers come back one by one in ``rejected``."""
        if isinstance(numbers, list):
            return self._client._call(_http.add_suppressions(numbers, reason, default_region))
        data, filename = _http.read_contacts(numbers)
        return self._client._call(_http.add_suppressions_csv(data, filename, reason, default_region))

    def list(
        self, number: str | None = None, *, default_region: str | None = None, limit: int | None = None,
        offset: int | None = None,
    ) -> SuppressionPage:
        """A page of the list, newest first; ``number`` looks one up (normalised like contacts' numbers)."""
        return self._client._call(_http.list_suppressions(number, default_region, limit, offset))

    def delete(self, number: str) -> None:
        """Take an E.164 number off the list (DialerdApiError 404 suppression_not_found when not on it)."""
        self._client._call(_http.delete_suppression(number))
