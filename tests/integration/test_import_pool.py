"""The import's worker-process path (``importer._pooled``, files of ``POOL_MIN_BYTES`` or more) against its
thread path: the same report, contacts and stored problems; a bad CSV mid-file and a worker that dies
both fail the import without keeping anything (SQLite and PostgreSQL, like the other store tests).
"""

from __future__ import annotations

import io
import os
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from dialerd.domain.campaign import ACCEPTS_CONTACTS, CampaignStatus
from dialerd.errors import DialerdError, InvalidCsv
from dialerd.services import importer
from dialerd.services.csv_contacts import ContactRows, Record, RowRules, contact_rows
from dialerd.store.repo import T_CONTACT, Store
from dialerd.store.tables import Campaign
from dialerd.timestamps import utcnow

pytestmark = pytest.mark.timeout(60)

BATCH = 7  # small batches: many of them, several out to the workers at once


def messy_csv(rows: int) -> bytes:
    """Valid rows among every kind of row problem, a multi-number cell, zones from a column and numbers."""
    lines = ["phone_number,mobile,timezone,name"]
    for i in range(rows):
        kind = i % 9
        number = f"+1415555{i % 10000:04d}"
        lines.append({
            0: f"{number},,,n{i}",
            1: f"not a number,{number},,n{i}",  # the second phone column gives the number
            2: f"{number},,Europe/Berlin,n{i}",
            3: f"{number},,Mars/Base,n{i}",  # unknown_timezone
            4: ",,,",  # empty_row
            5: f"4155550124.0 ::: {number},,,n{i}",  # multi-number cell, the first is an artefact
            6: f'"{number}"x,,,n{i}',  # text after a closing quote: malformed_row
            7: f"{number},,,n{i},extra",  # too_many_fields
            8: f"(212) 555-{i % 10000:04d},,america/new_york,n{i}",
        }[kind])
    return ("\n".join(lines) + "\n").encode()


def dies_on_the_first_batch(rules: RowRules, campaign: str | None, default: str | None,
                             records: list[Record]) -> ContactRows:
    """``contact_rows``, but the worker given the first data row (line 2) ends, as an OOM kill would end it."""
    first = records[0]
    if isinstance(first, tuple) and first[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return contact_rows(rules, campaign, default, records)


@pytest.fixture(autouse=True)
def stop_workers() -> Iterator[None]:
    yield
    importer.shutdown_pool()


async def new_campaign(store: Store, status: CampaignStatus) -> tuple[str, str]:
    tenant, _ = await store.ensure_tenant("t_" + secrets.token_hex(4), "acme", 10, 60)
    now = utcnow()
    cid = "cmp_" + secrets.token_hex(10)
    await store.insert_campaign(Campaign(
        id=cid, tenant_id=tenant.id, name="x", status=status.value, caller_id="", destination="ctx,s,1",
        default_region="US", max_concurrent_calls=1, retries_per_contact=0, retry_delay_seconds=60,
        ring_timeout_seconds=30, import_report={}, created_by="t", created_at=now, updated_at=now,
    ))
    return cid, tenant.id


async def contacts(store: Store, cid: str) -> list[tuple[Any, ...]]:
    c = T_CONTACT.c
    async with store.read() as conn:
        found = await conn.execute(select(c.line, c.phone_e164, c.raw_number, c.fields, c.status, c.timezone,
                                          c.timezone_source).where(c.campaign_id == cid).order_by(c.id))
        return [tuple(row) for row in found.all()]


def pooled(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    monkeypatch.setattr(importer, "POOL_MIN_BYTES", 0 if on else 1 << 62)


async def test_the_worker_path_gives_the_thread_paths_report_contacts_and_problems(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = messy_csv(400)
    results = []
    for on in (False, True):
        pooled(monkeypatch, on)
        cid, tenant = await new_campaign(store, CampaignStatus.IMPORTING)
        report = await importer.import_contacts(store, cid, io.BytesIO(data), "US", batch_size=BATCH,
                                                tenant_id=tenant)
        problems, total = await store.import_problems(cid, 10_000, 0)
        results.append((report.as_json(), await contacts(store, cid),
                        [(p.line, p.value, p.reason, p.code) for p in problems], total))
        assert (importer._pool is not None) == on  # the thread path never starts a worker
    thread, pool = results
    assert pool == thread
    report = thread[0]
    assert report["rows_total"] == 400 and report["rows_rejected"] > 0 and report["multi_number_cells"] > 0
    assert {p["code"] for p in report["problems"]} >= {"unknown_timezone", "empty_row", "malformed_row",
                                                        "too_many_fields"}
    assert report["phone_columns"]["mobile"] > 0


async def test_the_worker_path_appends_the_same_rows_and_keeps_the_problem_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importer, "MAX_REPORTED_PROBLEMS", 5)
    data = messy_csv(200)
    results = []
    for on in (False, True):
        pooled(monkeypatch, on)
        cid, tenant = await new_campaign(store, CampaignStatus.DRAFT)
        report, appended = await importer.append_contacts(store, cid, io.BytesIO(data), "US", tenant_id=tenant,
                                                          into=ACCEPTS_CONTACTS, batch_size=BATCH)
        assert appended.accepted and len(report.problems) == 5
        results.append((report.as_json(), await contacts(store, cid)))
    assert results[1] == results[0]
    assert results[0][0]["problems_truncated"] is True


async def test_an_unbalanced_quote_mid_file_refuses_it_as_the_thread_path_does(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tail = "".join(f"+1415556{i:04d},,,t{i}\n" for i in range(50)).encode()  # no quote closes it
    data = messy_csv(300) + b'+14155550999,,,"never closed\n' + tail
    refusals = []
    for on in (False, True):
        pooled(monkeypatch, on)
        cid, tenant = await new_campaign(store, CampaignStatus.DRAFT)
        with pytest.raises(InvalidCsv) as caught:
            await importer.append_contacts(store, cid, io.BytesIO(data), "US", tenant_id=tenant,
                                           into=ACCEPTS_CONTACTS, batch_size=BATCH)
        refusals.append((caught.value.error_id, caught.value.details, str(caught.value)))
        assert await contacts(store, cid) == []  # all or nothing
    assert refusals[1] == refusals[0]
    assert refusals[0][0] == "csv_malformed" and refusals[0][1]["line"] == 302


async def test_a_worker_that_dies_mid_import_fails_it_and_the_next_import_starts_new_workers(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pooled(monkeypatch, True)
    data = messy_csv(2000)
    cid, tenant = await new_campaign(store, CampaignStatus.DRAFT)
    monkeypatch.setattr(importer, "contact_rows", dies_on_the_first_batch)
    with pytest.raises(DialerdError) as caught:
        await importer.append_contacts(store, cid, io.BytesIO(data), "US", tenant_id=tenant,
                                       into=ACCEPTS_CONTACTS, batch_size=BATCH)
    assert caught.value.error_id == "import_worker_failed"
    assert importer._pool is None  # the broken pool is dropped
    assert await contacts(store, cid) == []

    monkeypatch.setattr(importer, "contact_rows", contact_rows)
    report, appended = await importer.append_contacts(store, cid, io.BytesIO(data), "US", tenant_id=tenant,
                                                      into=ACCEPTS_CONTACTS, batch_size=BATCH)
    assert appended.accepted and report.rows_total == 2000 and appended.added > 0
    assert importer._pool is not None
