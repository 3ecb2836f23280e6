"""Webhooks on the whole daemon (SQLite and PostgreSQL) with a real HTTP receiver on loopback: every event
arrives once in id order per campaign with a valid signature; a receiver answering 500, refusing
connections or hanging past the timeout gets the events after it recovers, in order, duplicates only after
faults; an event failing past the retry period is dead and the campaign goes on; a failing receiver of one
campaign never holds back another's; targets on private addresses are refused unless allowed; the secret
is never answered nor logged. The kill -9 test on the real Asterisk is tests/e2e/test_webhooks_crash.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dialerd.domain.webhooks import verify
from dialerd.logs import setup_logging
from dialerd.pbx.fake import FakePbx
from tests.conftest import Api, free_port, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(90)

SECRET = "whsec-" + "0123456789abcdef" * 2
CSV = "phone_number\n" + "".join(f"+1415555{n:04d}\n" for n in range(100, 106))


@dataclass
class Receiver:
    """An aiohttp server on loopback recording each request; ``answer`` decides each response."""

    port: int = field(default_factory=free_port)
    got: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[int], Any] = lambda n: 200  # request number -> status, or "hang"
    runner: web.AppRunner | None = None
    bad_signatures: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = len(self.got)
        entry = {"id": int(request.headers["Dialerd-Event-Id"]), "type": request.headers["Dialerd-Event-Type"],
                 "body": json.loads(body), "content_type": request.content_type, "n": n}
        if not verify(SECRET, request.headers["Dialerd-Signature"], body, int(time.time())):
            self.bad_signatures += 1
        self.got.append(entry)
        what = self.answer(n)
        if what == "hang":
            await asyncio.sleep(30)
        entry["status"] = what
        return web.Response(status=int(what) if what != "hang" else 200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def delivered_ids(self) -> list[int]:
        """The ids of the requests answered 2xx, in arrival order."""
        return [g["id"] for g in self.got if isinstance(g.get("status"), int) and 200 <= g["status"] < 300]


async def event_ids(api: Api, cid: str) -> list[int]:
    events = await api.daemon.store.events_after(cid, 0, 100000)
    return [e.id for e in events]


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def state(api: Api, cid: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/campaigns/{cid}/webhook")
    assert status == 200, body
    return dict(body)


async def finished_and_drained(api: Api, cid: str) -> dict[str, Any] | None:
    _, campaign = await api.call("GET", f"/api/v1/campaigns/{cid}")
    if campaign["status"] != "completed":
        return None
    s = await state(api, cid)
    last = (await event_ids(api, cid))[-1]
    return s if s["pending"] == 0 and s["delivered_through"] == last else None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def daemon_api(db_url: str, keys: bool = True, **overrides: Any) -> tuple[Any, aiohttp.ClientSession, Api]:
    pbx = FakePbx(time_scale=0.01)
    settings = test_settings(db_url, shutdown_grace_period=0.0, **overrides)
    daemon = await start_daemon(settings, pbx)
    await asyncio.wait_for(pbx.wait_connected(), 5)
    session = aiohttp.ClientSession()
    made = {"acme": await make_key(daemon, "acme")} if keys else {}
    return daemon, session, Api(f"http://127.0.0.1:{daemon.port}", session, made, daemon)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    daemon, session, a = await daemon_api(db_url, webhooks_allow_private=True, webhooks_timeout=1.0)
    try:
        yield a
    finally:
        await session.close()
        await daemon.stop()


async def run_campaign(api: Api, receiver: Receiver, csv: str = CSV) -> str:
    status, body = await api.create(csv, webhook_url=receiver.url, webhook_secret=SECRET, max_concurrent_calls=3)
    assert status == 201, body
    assert body["webhook_url"] == receiver.url and "webhook_secret" not in body and SECRET not in json.dumps(body)
    cid = str(body["id"])
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    return cid


async def test_every_event_arrives_signed_once_in_order_with_the_sse_json(api: Api, receiver: Receiver) -> None:
    cid = await run_campaign(api, receiver)
    final = await wait_for(lambda: finished_and_drained(api, cid), "the campaign to end and its events to arrive")
    ids = await event_ids(api, cid)
    assert [g["id"] for g in receiver.got] == ids  # each once, in id order, nothing after a fault-free run
    assert receiver.bad_signatures == 0
    assert final == {"url": receiver.url, "delivered_through": ids[-1], "pending": 0, "dead": 0,
                     "last_error": None, "last_attempt_at": final["last_attempt_at"], "next_attempt_at": None}
    stored = {e.id: e for e in await api.daemon.store.events_after(cid, 0, 100000)}
    for g in receiver.got:
        ev = stored[g["id"]]
        assert g["type"] == ev.kind and g["content_type"] == "application/json"
        assert g["body"] == {"id": ev.id, "campaign_id": cid, **ev.payload}  # the SSE data, byte for byte JSON
    kinds = [g["type"] for g in receiver.got]
    assert kinds[-1] == "end" and "campaign" in kinds and "completed" in kinds and "originated" in kinds


async def test_a_receiver_answering_500_then_recovering_gets_everything_in_order(api: Api,
                                                                              receiver: Receiver) -> None:
    receiver.answer = lambda n: 500 if n < 3 else 200
    cid = await run_campaign(api, receiver)
    await wait_for(lambda: finished_and_drained(api, cid), "delivery after the 500s", timeout=60)
    ids = await event_ids(api, cid)
    assert receiver.delivered_ids() == ids
    assert [g["id"] for g in receiver.got[:3]] == [ids[0]] * 3  # the head retried; nothing overtook it
    s = await state(api, cid)
    assert s["last_error"] == "HTTP 500" and s["dead"] == 0
    status, text = await api.call("GET", "/metrics", tenant=None)
    lines = text.decode().splitlines()
    assert f'dialerd_webhook_deliveries_total{{result="delivered"}} {float(len(ids))}' in lines
    assert 'dialerd_webhook_deliveries_total{result="failed"} 3.0' in lines


async def test_refused_connections_then_a_hang_past_the_timeout_are_retried(api: Api, receiver: Receiver) -> None:
    await receiver.stop()  # nothing listens: connection refused
    cid = await run_campaign(api, receiver)

    async def refused_seen() -> bool:
        s = await state(api, cid)
        return bool(s["last_error"] and "cannot connect" in s["last_error"] and s["next_attempt_at"])

    await wait_for(refused_seen, "a refused connection to be recorded")
    receiver.answer = lambda n: "hang" if n == 0 else 200  # back, but the first request hangs past 1 s
    await receiver.start()
    await wait_for(lambda: finished_and_drained(api, cid), "delivery after the outage", timeout=60)
    ids = await event_ids(api, cid)
    assert receiver.got[0]["id"] == ids[0] and receiver.got[1]["id"] == ids[0]  # timed out, then again
    assert receiver.delivered_ids() == ids
    first = [g["id"] for g in receiver.got]
    assert sorted(set(first)) == ids and all(a <= b for a, b in zip(first, first[1:], strict=False))


async def test_an_event_failing_past_the_retry_period_is_dead_and_the_rest_go_on(db_url: str,
                                                                                receiver: Receiver) -> None:
    daemon, session, api = await daemon_api(db_url, webhooks_allow_private=True, webhooks_retry_for=1.5)
    try:
        failing: set[int] = set()

        def answer(n: int) -> int:
            if not failing:
                failing.add(n)
            return 500 if n in failing or n == 1 or n == 2 else 200

        receiver.answer = answer
        cid = await run_campaign(api, receiver)
        final = await wait_for(lambda: finished_and_drained(api, cid), "the dead event to be passed", timeout=60)
        ids = await event_ids(api, cid)
        assert final["dead"] == 1 and final["last_error"] == "HTTP 500"
        assert await daemon.store.webhooks.dead_events(cid) == [ids[0]]
        assert receiver.delivered_ids() == ids[1:]
    finally:
        await session.close()
        await daemon.stop()


async def test_one_campaigns_failing_receiver_never_holds_back_another(api: Api, receiver: Receiver) -> None:
    broken = Receiver(answer=lambda n: 503)
    await broken.start()
    try:
        held = await run_campaign(api, broken)
        cid = await run_campaign(api, receiver, "phone_number\n+14155550200\n+14155550201\n")
        await wait_for(lambda: finished_and_drained(api, cid), "the healthy campaign's events")
        assert receiver.delivered_ids() == await event_ids(api, cid)
        s = await state(api, held)
        assert s["delivered_through"] == 0 and s["pending"] > 0 and s["last_error"] == "HTTP 503"
        assert {g["id"] for g in broken.got} == {(await event_ids(api, held))[0]}  # only its head, retried
    finally:
        await broken.stop()


async def test_patching_the_url_sends_the_backlog_to_the_corrected_receiver(api: Api, receiver: Receiver) -> None:
    wrong = Receiver(answer=lambda n: 404)
    await wrong.start()
    try:
        cid = await run_campaign(api, wrong)
        await wait_for(lambda: _has(wrong), "the wrong receiver to be tried")
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/pause"))[0] == 200
        status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"webhook_url": receiver.url})
        assert status == 200 and body["webhook_url"] == receiver.url, body
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/resume"))[0] == 200
        await wait_for(lambda: finished_and_drained(api, cid), "the backlog at the corrected URL")
        assert receiver.delivered_ids() == await event_ids(api, cid)
        assert {g["id"] for g in wrong.got} == {(await event_ids(api, cid))[0]}
    finally:
        await wrong.stop()


async def _has(r: Receiver) -> bool:
    return bool(r.got)


async def test_a_webhook_set_by_patch_gets_the_events_from_then_on(api: Api, receiver: Receiver) -> None:
    status, body = await api.create(CSV)
    assert status == 201 and body["webhook_url"] is None
    cid = str(body["id"])
    before = await event_ids(api, cid)
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"webhook_url": receiver.url})
    assert status == 400 and body["details"]["field"] == "webhook_secret", body
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}",
                                  json={"webhook_url": receiver.url, "webhook_secret": SECRET})
    assert status == 200, body
    assert (await state(api, cid))["delivered_through"] == (before[-1] if before else 0)
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}", json={"webhook_url": ""})  # removed
    assert status == 200 and body["webhook_url"] is None, body
    assert (await state(api, cid))["url"] is None and (await state(api, cid))["pending"] == 0
    status, body = await api.call("PATCH", f"/api/v1/campaigns/{cid}",
                                  json={"webhook_url": receiver.url, "webhook_secret": SECRET})
    assert status == 200, body
    assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
    await wait_for(lambda: finished_and_drained(api, cid), "the events after the PATCH")
    assert receiver.delivered_ids() == [i for i in await event_ids(api, cid) if i not in before]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/x",
                                 "http://169.254.169.254/latest/meta-data", "http://localhost:8080/",
                                 "https://192.168.0.10/hook", "http://100.64.1.1/"])
async def test_private_targets_are_refused_at_create_and_patch_unless_allowed(offline_api: Api, url: str) -> None:
    status, body = await offline_api.create(CSV, webhook_url=url, webhook_secret=SECRET)
    assert status == 400 and body["details"]["field"] == "webhook_url", body
    assert "allow_private" in body["error"], body
    status, body = await offline_api.create(CSV)
    cid = body["id"]
    status, body = await offline_api.call("PATCH", f"/api/v1/campaigns/{cid}",
                                          json={"webhook_url": url, "webhook_secret": SECRET})
    assert status == 400 and body["details"]["field"] == "webhook_url", body


@pytest.mark.parametrize("fields, field, words", [
    ({"webhook_url": "ftp://example.com/x", "webhook_secret": SECRET}, "webhook_url", "http"),
    ({"webhook_url": "https://user:pw@example.com/x", "webhook_secret": SECRET}, "webhook_url", "credentials"),
    ({"webhook_url": "https://example.com/x"}, "webhook_secret", "required"),
    ({"webhook_secret": SECRET}, "webhook_url", "required"),
    ({"webhook_url": "https://example.com/x", "webhook_secret": "short"}, "webhook_secret", "16"),
])
async def test_bad_webhook_fields_name_the_problem(offline_api: Api, fields: dict[str, str], field: str,
                                                   words: str) -> None:
    status, body = await offline_api.create(CSV, **fields)
    assert status == 400 and body["details"]["field"] == field and words in body["error"], body
    _, listed = await offline_api.call("GET", "/api/v1/campaigns")
    assert listed["total"] == 0  # nothing half-written


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(db_url: str, receiver: Receiver,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Allowed at create (here: allow_private on), then refused at each resolution once it is off: the
    resolver checks every answer, not only the create's."""
    daemon, session, api = await daemon_api(db_url, webhooks_allow_private=True)
    try:
        status, body = await api.create(CSV, webhook_url=f"http://localhost:{receiver.port}/hook",
                                        webhook_secret=SECRET)
        assert status == 201, body
        cid = body["id"]
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/start"))[0] == 200
        await wait_for(lambda: _has(receiver), "a delivery while private targets are allowed")
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/pause"))[0] == 200
        key = api.keys["acme"]
    finally:
        await session.close()
        await daemon.stop()
    seen = len(receiver.got)
    caplog.set_level(logging.INFO)
    daemon, session, api = await daemon_api(db_url, webhooks_allow_private=False, keys=False)
    try:
        api.keys["acme"] = key
        assert (await api.call("POST", f"/api/v1/campaigns/{cid}/resume"))[0] == 200

        async def refused() -> bool:
            s = await state(api, cid)
            return bool(s["last_error"] and "allow_private" in s["last_error"])

        await wait_for(refused, "the refusal at resolution")
        assert len(receiver.got) == seen  # nothing more reached the private address
        assert SECRET not in caplog.text
    finally:
        await session.close()
        await daemon.stop()


async def test_the_secret_is_never_answered_nor_logged(api: Api, receiver: Receiver,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dialerd")
    receiver.answer = lambda n: 500 if n == 0 else 200
    cid = await run_campaign(api, receiver)
    await wait_for(lambda: finished_and_drained(api, cid), "delivery")
    for path in (f"/api/v1/campaigns/{cid}", "/api/v1/campaigns", f"/api/v1/campaigns/{cid}/webhook",
                 "/api/v1/openapi.json"):
        _, body = await api.call("GET", path)
        assert SECRET not in json.dumps(body)
    assert SECRET not in caplog.text and "webhook delivery failed" in caplog.text


def test_debug_logging_keeps_the_database_drivers_statements_out() -> None:
    """With [log] level = "debug" the drivers would log each statement's parameters (a webhook secret
    among them): setup_logging holds them at INFO."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers),
             {n: logging.getLogger(n).level for n in ("aiosqlite", "asyncpg", "sqlalchemy", "aiohttp.access",
                                                      "apscheduler")})
    try:
        setup_logging("debug", "json")
        assert root.level == logging.DEBUG
        for name in ("aiosqlite", "asyncpg", "sqlalchemy"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


async def test_a_worker_the_store_fails_starts_again_and_delivers(api: Api, receiver: Receiver,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A store error in a worker (not a delivery failure) is logged and the worker starts again: the
    events wait in the outbox meanwhile, none is skipped."""
    from dialerd.errors import StoreError
    from dialerd.services import webhooks as service

    monkeypatch.setattr(service, "RESTART_AFTER", 0.2)
    store = api.daemon.store.webhooks
    real = store.events_after
    failures = [2]

    async def flaky(campaign_id: str, after_id: int, limit: int) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("database error: OperationalError")
        return await real(campaign_id, after_id, limit)

    monkeypatch.setattr(store, "events_after", flaky)
    cid = await run_campaign(api, receiver)
    await wait_for(lambda: finished_and_drained(api, cid), "delivery after the store failed twice")
    assert failures == [0]
    assert [g["id"] for g in receiver.got] == await event_ids(api, cid)
