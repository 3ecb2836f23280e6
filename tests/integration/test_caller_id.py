"""Caller-id pools on the whole daemon (the real dispatcher and follower on the fake PBX), SQLite and
PostgreSQL: the form's checks, PATCH, the caller id each attempt records, and the per number figures in
the campaign's JSON and on /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from dialerd.client import AsyncDialerd, Dialerd
from dialerd.pbx.fake import DECLINE, FakeOutcome, FakePbx
from dialerd.store import db
from dialerd.store.db import create_engine, migrate
from dialerd.timestamps import utcnow
from tests.conftest import Api, make_key, start_daemon, test_settings

pytestmark = pytest.mark.timeout(60)

NY, CHI, SF = "+12125550100", "+13125550100", "+14155550100"
QUICK = FakeOutcome(talk=0.05)


class Rig(Api):
    pbx: FakePbx

    async def campaign(self, numbers: list[str], **fields: Any) -> dict[str, Any]:
        csv = "phone_number\n" + "".join(n + "\n" for n in numbers)
        status, body = await self.create(csv, **fields)
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def get(self, cid: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/campaigns/{cid}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def run_to_end(self, cid: str, timeout: float = 20.0) -> dict[str, Any]:
        status, body = await self.call("POST", f"/api/v1/campaigns/{cid}/start")
        assert status == 200, body
        deadline = time.monotonic() + timeout
        while (body := await self.get(cid))["status"] != "completed":
            assert time.monotonic() < deadline, f"campaign not completed: {body['contacts']}"
            await asyncio.sleep(0.05)
        return body

    async def history(self, cid: str) -> dict[str, list[dict[str, Any]]]:
        status, body = await self.call("GET", f"/api/v1/campaigns/{cid}/contacts?include=attempt_history")
        assert status == 200, body
        return {c["phone_number"]: c["attempt_history"] for c in body["contacts"]}

    async def metrics(self) -> dict[tuple[str, str, str], float]:
        async with self.session.get(self.base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        return {(s.name, s.labels["campaign"], s.labels["caller_id"]): s.value
                for family in text_string_to_metric_families(text) if family.name.startswith("dialerd_caller_id_")
                for s in family.samples if s.name.endswith("_total")}


@pytest.fixture
async def rig(db_url: str) -> AsyncIterator[Rig]:
    pbx = FakePbx(time_scale=1.0)
    daemon = await start_daemon(test_settings(db_url, shutdown_grace_period=0.0), pbx)
    keys = {"acme": await make_key(daemon, "acme")}
    async with aiohttp.ClientSession() as session:
        api = Rig(f"http://127.0.0.1:{daemon.port}", session, keys, daemon)
        api.pbx = pbx
        await asyncio.wait_for(pbx.wait_connected(), 5)
        try:
            yield api
        finally:
            await daemon.stop()


@pytest.mark.parametrize(("fields", "names"), [
    ({"caller_id": f"{NY},,{CHI}"}, "empty entry"),
    ({"caller_id": f"{NY},{CHI},{NY}"}, f"entry '{NY}' is given twice"),
    ({"caller_id": f"{NY},+1312;5550100"}, "entry '+1312;5550100'"),
    ({"caller_id": ",".join(f"+1212555{n:04d}" for n in range(100))}, "at most 1000 characters"),
    ({"caller_id": NY, "caller_id_strategy": "nearest"}, "round_robin, local_presence"),
])
async def test_a_bad_pool_or_strategy_is_a_400_naming_it_and_writes_nothing(
    rig: Rig, fields: dict[str, str], names: str,
) -> None:
    status, body = await rig.create("phone_number\n+12125550199\n", **fields)
    assert status == 400, body
    field = "caller_id_strategy" if "caller_id_strategy" in fields else "caller_id"
    assert body["error_id"] == "invalid_field" and body["details"]["field"] == field
    assert body["error"].startswith(f"{field}: ") and names in body["error"]
    status, page = await rig.call("GET", "/api/v1/campaigns")
    assert status == 200 and page["total"] == 0


async def test_the_pool_and_strategy_are_shown_and_patched(rig: Rig) -> None:
    created = await rig.campaign(["+12125550199"], caller_id=f" {NY} , {CHI}", caller_id_strategy="local_presence")
    assert created["caller_id"] == f"{NY},{CHI}" and created["caller_id_strategy"] == "local_presence"
    assert created["caller_id_stats"] == [
        {"caller_id": NY, "attempts": 0, "answered": 0, "answer_rate": None, "rejected": 0},
        {"caller_id": CHI, "attempts": 0, "answered": 0, "answer_rate": None, "rejected": 0}]
    default = await rig.campaign(["+12125550199"], caller_id=NY)
    assert default["caller_id_strategy"] == "round_robin"

    cid = created["id"]
    status, body = await rig.call("PATCH", f"/api/v1/campaigns/{cid}", json={"caller_id_strategy": "round_robin",
                                                                             "caller_id": f"{SF},{NY}"})
    assert status == 200, body
    assert (body["caller_id_strategy"], body["caller_id"]) == ("round_robin", f"{SF},{NY}")
    assert [s["caller_id"] for s in body["caller_id_stats"]] == [SF, NY]
    for bad in ({"caller_id_strategy": "closest"}, {"caller_id": f"{SF},{SF}"}):
        status, body = await rig.call("PATCH", f"/api/v1/campaigns/{cid}", json=bad)
        assert status == 400 and body["details"]["field"] == next(iter(bad)), body
    fresh = await rig.get(cid)
    assert (fresh["caller_id_strategy"], fresh["caller_id"]) == ("round_robin", f"{SF},{NY}")


async def test_local_presence_records_each_attempts_caller_id_and_counts_per_number(rig: Rig) -> None:
    contacts = {"+13125550111": CHI, "+13125550112": CHI, "+14155550113": SF, "+12125550114": NY,
                "+442079460115": None}  # London: no local number, round robin
    for number in contacts:
        rig.pbx.program(number, QUICK)
    rig.pbx.program("+13125550112", DECLINE)  # SIP 603: a rejection of CHI
    created = await rig.campaign(list(contacts), caller_id=f"{NY},{CHI},{SF}", caller_id_strategy="local_presence",
                                 max_concurrent_calls=1)
    cid = created["id"]
    done = await rig.run_to_end(cid)

    history = await rig.history(cid)
    sent = {r.number: r.caller_id for r in rig.pbx.requests}
    for number, local in contacts.items():
        [attempt] = history[number]
        assert attempt["caller_id"] == sent[number]  # the request carried what the attempt records
        if local is not None:
            assert attempt["caller_id"] == local, number
    london = history["+442079460115"][0]["caller_id"]
    assert london in (NY, CHI, SF)

    expected = {NY: [1, 1, 0], CHI: [2, 1, 1], SF: [1, 1, 0]}
    expected[london][0] += 1
    expected[london][1] += 1
    stats = {s["caller_id"]: s for s in done["caller_id_stats"]}
    assert [s["caller_id"] for s in done["caller_id_stats"]] == [NY, CHI, SF]
    for number, (attempts, answered, rejected) in expected.items():
        assert stats[number] == {"caller_id": number, "attempts": attempts, "answered": answered,
                                 "answer_rate": round(answered / attempts, 4), "rejected": rejected}

    scraped = await rig.metrics()  # completed just now: within the 24 h an ended campaign stays
    for number, (attempts, answered, rejected) in expected.items():
        assert scraped[("dialerd_caller_id_attempts_total", cid, number)] == attempts
        assert scraped[("dialerd_caller_id_answered_total", cid, number)] == answered
        assert scraped[("dialerd_caller_id_rejected_total", cid, number)] == rejected
    # The list shows the same figures (one grouped read for the page).
    status, page = await rig.call("GET", "/api/v1/campaigns")
    assert status == 200 and page["campaigns"][0]["caller_id_stats"] == done["caller_id_stats"]


async def test_round_robin_takes_the_pool_in_turn(rig: Rig) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(120, 126)]
    for number in numbers:
        rig.pbx.program(number, QUICK)
    created = await rig.campaign(numbers, caller_id=f"{NY},{CHI}", max_concurrent_calls=1)
    done = await rig.run_to_end(created["id"])
    assert [r.caller_id for r in rig.pbx.requests] == [NY, CHI] * 3  # SF's contacts, yet no local presence
    assert [(s["caller_id"], s["attempts"]) for s in done["caller_id_stats"]] == [(NY, 3), (CHI, 3)]


async def test_no_caller_id_records_none(rig: Rig) -> None:
    rig.pbx.program("+14155550130", QUICK)
    created = await rig.campaign(["+14155550130"])
    done = await rig.run_to_end(created["id"])
    assert done["caller_id"] == "" and done["caller_id_stats"] == []
    assert (await rig.history(created["id"]))["+14155550130"][0]["caller_id"] is None
    assert rig.pbx.requests[0].caller_id == ""


async def test_migration_0010_keeps_each_campaigns_caller_id(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(db_url)
    try:
        monkeypatch.setattr(db, "MIGRATIONS", [m for m in db.MIGRATIONS if m[0] < 10])
        assert await migrate(engine) == 9
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO tenant (id, name, concurrent_max, calls_per_minute, created_at) "
                                    "VALUES ('ten_old', 'old', 5, 60, :t)"), {"t": now})
            await conn.execute(text(
                "INSERT INTO campaign (id, tenant_id, name, status, caller_id, destination, default_region,"
                " max_concurrent_calls, retries_per_contact, retry_delay_seconds, ring_timeout_seconds,"
                " import_report, created_by, created_at, updated_at) VALUES ('cmp_old', 'ten_old', 'old', 'draft',"
                " :caller, 'dialerd-demo,s,1', 'US', 1, 0, 60, 30, '{}', 'k', :t, :t)"),
                {"caller": '"Acme" <+12125550100>', "t": now})
        monkeypatch.undo()
        assert await migrate(engine) == db.SCHEMA_VERSION
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT caller_id, caller_id_strategy FROM campaign"))).one()
        assert tuple(row) == ('"Acme" <+12125550100>', "round_robin")
    finally:
        await engine.dispose()


async def test_both_clients_create_and_patch_the_pool_and_strategy(offline_api: Api, tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("phone_number\n+12125550199\n")
    async with AsyncDialerd(offline_api.base, offline_api.keys["acme"], timeout=10) as client:
        created = await client.campaigns.create(path, name="pool", caller_id=f"{NY},{CHI}",
                                                caller_id_strategy="local_presence")
        assert (created["caller_id"], created["caller_id_strategy"]) == (f"{NY},{CHI}", "local_presence")
        assert [s["caller_id"] for s in created["caller_id_stats"]] == [NY, CHI]
        patched = await client.campaigns.update(created["id"], caller_id_strategy="round_robin")
        assert patched["caller_id_strategy"] == "round_robin"

    def sync_client() -> tuple[Any, Any]:
        with Dialerd(offline_api.base, offline_api.keys["acme"]) as client:
            made = client.campaigns.create(path, name="pool", caller_id=SF, caller_id_strategy="local_presence")
            return made, client.campaigns.update(made["id"], caller_id=f"{SF},{NY}")

    made, changed = await asyncio.to_thread(sync_client)
    assert (made["caller_id"], made["caller_id_strategy"]) == (SF, "local_presence")
    assert (changed["caller_id"], changed["caller_id_strategy"]) == (f"{SF},{NY}", "local_presence")
