"""Property-based fuzzing of the REST API over real HTTP, on SQLite and PostgreSQL.

Arbitrary create-form fields, arbitrary and generated CSV files, arbitrary query strings and path ids, and
malformed or oversized bodies. The API must answer 201 or a JSON 4xx, never a 500 or a dropped connection.
A refused create must leave no campaign, contact or event row behind. An accepted one must store exactly
the rows its report calls valid.

Hypothesis is synchronous, so each property runs in a worker thread and sends its requests to the daemon
on the test's event loop (as test_schemathesis.py does). Runs are derandomized so CI sees the same
examples every time. SQLite gets the heavy example counts; PostgreSQL gets a smaller set (see EXAMPLES).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import phonenumbers
import pytest
import yarl
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dialerd.domain.campaign import VISIBLE
from dialerd.domain.contact import ContactStatus
from dialerd.services.csv_contacts import ContactsCsv, ParsedContact, RowProblem
from dialerd.store.repo import T_CAMPAIGN, T_CONTACT, T_EVENT
from tests.conftest import Api

T = TypeVar("T")

# max_examples per property and backend: the whole file stays under ~90 s for both backends together.
EXAMPLES = {
    "sqlite": {"fields": 90, "schedule": 40, "bytes": 70, "tables": 70, "query": 120, "ids": 100},
    "postgresql": {"fields": 30, "schedule": 15, "bytes": 20, "tables": 15, "query": 50, "ids": 40},
}
BOUNDARY = "dialerdFuzzBoundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CSV = b"phone_number,first_name\n+14155550100,Ann\n+14155550101,Bob\n+14155550100,dup\n"


# What happens below the database (HTTP framing, body limits) needs no second backend: SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate, Phase.shrink])


# ---- plumbing: the daemon runs on the test's loop, hypothesis in a worker thread -----------------------


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any  # parsed JSON for application/json, else the raw bytes

    def error(self) -> dict[str, Any]:
        """The JSON error body, checked for its documented shape."""
        assert self.content_type == "application/json", (self.status, self.body)
        assert isinstance(self.body, dict), self.body
        assert isinstance(self.body.get("error"), str) and self.body["error"], self.body
        assert isinstance(self.body.get("error_id"), str) and self.body["error_id"], self.body
        assert isinstance(self.body.get("details"), dict), self.body
        return self.body


class Bridge:
    """Runs coroutines on the daemon's loop from the hypothesis thread."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.loop = asyncio.get_running_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def request(self, method: str, url: str | yarl.URL, *, tenant: str | None = "acme",
                      headers: dict[str, str] | None = None, data: Any = None) -> Reply:
        hdrs = dict(headers or {})
        if tenant is not None:
            hdrs.update(self.api.auth(tenant))
        target = url if isinstance(url, yarl.URL) else yarl.URL(self.api.base + url, encoded=True)
        async with asyncio.timeout(60), self.api.session.request(method, target, headers=hdrs, data=data) as resp:
            raw = await resp.read()
            body: Any = json.loads(raw) if resp.content_type == "application/json" else raw
            return Reply(resp.status, resp.content_type, body)

    def post_form(self, body: bytes, content_type: str = MULTIPART) -> Reply:
        return self.run(self.request("POST", "/api/v1/campaigns", headers={"Content-Type": content_type},
                                     data=io.BytesIO(body)))


async def run_property(api: Api, prop: Callable[[Bridge], None]) -> None:
    bridge = Bridge(api)
    await asyncio.to_thread(prop, bridge)


def backend(api: Api) -> str:
    return str(api.daemon.store.dialect)


async def table_counts(api: Api) -> tuple[int, int, int]:
    """Rows in campaign, contact and event (one round trip)."""
    counts = [select(func.count()).select_from(t).scalar_subquery() for t in (T_CAMPAIGN, T_CONTACT, T_EVENT)]
    async with api.daemon.store.read() as conn:
        row = (await conn.execute(select(*counts))).one()
    return int(row[0]), int(row[1]), int(row[2])


async def stored_contacts(api: Api, campaign_id: str) -> list[tuple[int, str, str, dict[str, str]]]:
    async with api.daemon.store.read() as conn:
        rows = (await conn.execute(
            select(T_CONTACT.c.line, T_CONTACT.c.phone_e164, T_CONTACT.c.raw_number, T_CONTACT.c.fields)
            .where(T_CONTACT.c.campaign_id == campaign_id).order_by(T_CONTACT.c.line)
        )).all()
    return [(r.line, r.phone_e164, r.raw_number, dict(r.fields)) for r in rows]


async def campaign_status(api: Api, campaign_id: str) -> str | None:
    async with api.daemon.store.read() as conn:
        return (await conn.execute(select(T_CAMPAIGN.c.status).where(T_CAMPAIGN.c.id == campaign_id))).scalar()


def multipart(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body built by hand, so field values can be any bytes at all."""
    out = bytearray()
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def reparse(data: bytes, region: str | None) -> tuple[list[ParsedContact], list[RowProblem]]:
    parser = ContactsCsv(io.BytesIO(data), default_region=region)
    valid: list[ParsedContact] = []
    rejected: list[RowProblem] = []
    for batch in parser.batches():
        for item in batch:
            (valid if isinstance(item, ParsedContact) else rejected).append(item)
    return valid, rejected


def check_outcome(bridge: Bridge, reply: Reply, before: tuple[int, int, int], csv: bytes, region: str | None) -> None:
    """The all-or-nothing contract of create, checked in the database."""
    after = bridge.run(table_counts(bridge.api))
    assert reply.status in (201, 400, 413), (reply.status, reply.body)
    if reply.status != 201:
        reply.error()
        assert after == before, f"a refused create ({reply.status} {reply.body}) wrote rows: {before} -> {after}"
        return
    body = reply.body
    cid = body["id"]
    assert bridge.run(campaign_status(bridge.api, cid)) == body["status"] != "importing"
    stored = bridge.run(stored_contacts(bridge.api, cid))
    assert after == (before[0] + 1, before[1] + len(stored), before[2]), (before, after)
    # What the parser calls valid, first occurrence of each number, is exactly what was stored.
    valid, rejected = reparse(csv, region)
    first: dict[str, ParsedContact] = {}
    for item in valid:
        first.setdefault(item.phone_e164, item)
    expected = sorted((c.line, c.phone_e164, c.raw[:100], c.fields) for c in first.values())
    assert stored == expected
    report = body["import"]
    assert (report["rows_valid"], report["rows_rejected"]) == (len(valid), len(rejected))
    assert report["rows_total"] == len(valid) + len(rejected)
    assert report["contacts"] == body["contacts"]["total"] == body["contacts"]["pending"] == len(stored)
    assert report["duplicates"] == len(valid) - len(stored)
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(p.line, p.code) for p in rejected[:1000]]


# ---- strategies ---------------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)  # every code point but surrogates, controls included
WHITESPACE = st.sampled_from(["", " ", "\t", "\r\n", "\u00a0", "\u2028", "\x00", " 5 ", "\x0b5"])
INTEGERS = st.one_of(st.integers(-5, 400), st.integers(-(10**40), 10**40)).map(str)
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(repr)
HUGE = st.sampled_from(["9" * 5000, "1" + "0" * 100, "-" + "9" * 40, "x" * 5000, "é" * 3000])
RAW_BYTES = st.binary(max_size=40)
REGIONS = st.one_of(
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).map(str.lower),
    st.sampled_from(["XX", "ZZ", "UK", "001", "USA", "u s", "ß", "\u0131d", "", " gb ", "G\x00B"]),
)
DESTINATIONS = st.one_of(
    st.sampled_from(["sales,100", "sales,100,2", "stasis:bot", "stasis:bot,en,x", "a,b,0", "a,b,-1", "a,b,c,d",
                     "stasis:", ",", "a,,1", "ctx,ext,\u0663", "a b,c", "stasis:app,\x7f", "ctx;x,1"]),
    st.builds(lambda a, b, c: f"{a},{b},{c}", ANY_TEXT, ANY_TEXT, INTEGERS),
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """RFC 3339 timestamps and near misses: leap seconds, offsets, no offset, years 0001 and 9999."""
    year = draw(st.one_of(st.sampled_from([1, 1970, 2020, 2035, 2100, 9999]), st.integers(1, 9999)))
    month = draw(st.one_of(st.integers(1, 12), st.sampled_from([0, 13])))
    day = draw(st.one_of(st.integers(1, 28), st.sampled_from([0, 29, 30, 31, 32])))
    hour = draw(st.one_of(st.integers(0, 23), st.just(24)))
    minute = draw(st.one_of(st.integers(0, 59), st.just(60)))
    second = draw(st.one_of(st.integers(0, 59), st.sampled_from([60, 61])))
    frac = draw(st.sampled_from(["", ".5", ".123", ".123456", ".1234567891", ",5", "."]))
    sep = draw(st.sampled_from(["T", "T", "t", " ", "_"]))
    offset = draw(st.one_of(
        st.sampled_from(["Z", "Z", "z", "", "+00:00", "-00:00", "+14:00", "-12:00", "+23:59", "-23:59", "+24:00",
                         "+0530", "+05", "-00:01", "+00:00:30"]),
        st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)),
    ))
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{frac}{offset}"


STRICT_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})"
)


def strict_instant(text: str) -> datetime | None:
    """The instant an RFC 3339 timestamp names, by an independent reading; None if it is not one."""
    m = STRICT_RFC3339.fullmatch(text)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or ".0")[1:].ljust(6, "0"))
    off = m.group(8)
    try:
        local = datetime(y, mo, d, h, mi, s, micro, tzinfo=UTC)
        delta = timedelta() if off in "Zz" else (1 if off[0] == "+" else -1) * timedelta(hours=int(off[1:3]),
                                                                                          minutes=int(off[4:6]))
        if abs(delta) >= timedelta(hours=24):
            return None
        return local - delta
    except (ValueError, OverflowError):
        return None


def field_values(field: str) -> st.SearchStrategy[str | bytes]:
    generic = st.one_of(ANY_TEXT, WHITESPACE, INTEGERS, FLOATS, HUGE, RAW_BYTES)
    special: dict[str, st.SearchStrategy[str]] = {
        "name": ANY_TEXT.filter(lambda s: s.strip() != ""),
        "default_region": REGIONS,
        "scheduled_at": rfc3339(),
        "destination": DESTINATIONS,
        "agent_id": DESTINATIONS,
        "caller_id": st.sampled_from(["+14155550199", "Sales <100>", "bad;id", "back\\slash", "é" * 81]),
        "phone_number_id": st.sampled_from(["+14155550199", "x" * 81]),
    }
    if field in special:
        return st.one_of(special[field], special[field], generic)  # the field's own shapes, twice as often
    return st.one_of(st.integers(0, 120).map(str), generic)


FORM_FIELDS = ["name", "caller_id", "phone_number_id", "destination", "agent_id", "max_concurrent_calls",
               "retries_per_contact", "retry_delay_seconds", "ring_timeout_seconds", "scheduled_at", "default_region"]
ALIASES = {"agent_id": "destination", "phone_number_id": "caller_id"}
INT_FIELDS = {"max_concurrent_calls": (1, 100), "retries_per_contact": (0, 5), "retry_delay_seconds": (60, 604800),
              "ring_timeout_seconds": (5, 300)}


VALID = {
    "name": st.text("abc xyz", min_size=1, max_size=8).filter(str.strip), "caller_id": st.just("+14155550199"),
    "phone_number_id": st.just("Ops <+14155550198>"), "destination": st.just("sales,100,2"),
    "agent_id": st.just("stasis:voicebot,en"), "max_concurrent_calls": st.integers(1, 100).map(str),
    "retries_per_contact": st.integers(0, 5).map(str), "retry_delay_seconds": st.integers(60, 604800).map(str),
    "ring_timeout_seconds": st.integers(5, 300).map(str), "default_region": st.sampled_from(["US", "gb", " de "]),
    "scheduled_at": st.integers(1, 10**6).map(
        lambda s: (datetime.now(UTC) + timedelta(hours=1, seconds=s)).isoformat().replace("+00:00", "Z")),
}


@st.composite
def forms(draw: st.DrawFn) -> dict[str, str | bytes]:
    """A form where each field is absent, valid or arbitrary; so both answers come up often."""
    form: dict[str, str | bytes] = {}
    for field in FORM_FIELDS:
        mode = draw(st.sampled_from(["absent", "absent", "absent", "valid", "valid", "arbitrary"]))
        if field == "name" and mode == "absent":
            mode = draw(st.sampled_from(["absent", "valid", "valid", "valid"]))
        if mode != "absent":
            form[field] = draw(VALID[field] if mode == "valid" else field_values(field))
    return form


# ---- 1. every create-form field, arbitrary values ------------------------------------------------------


def as_text(value: str | bytes | None) -> str | None:
    """A form value as the server reads it (UTF-8), or None when it is absent or not UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


async def test_create_form_fields_never_500_and_all_or_nothing(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["fields"]

    def prop(bridge: Bridge) -> None:
        seen: dict[int, int] = {}

        @fuzz_settings(n)
        @given(form=forms())
        @example(form={"name": "x", "max_concurrent_calls": "\u00b2"})  # int("²") fails: was a 500
        @example(form={"name": "x", "default_region": "G\x00B"})
        @example(form={"name": "\x00"})
        @example(form={"name": b"\xff\xfe"})
        @example(form={"name": "x", "destination": "a,b", "agent_id": "c,d"})
        @example(form={"name": "x", "retries_per_contact": "-0", "retry_delay_seconds": " 60 "})
        def check(form: dict[str, str | bytes]) -> None:
            encoded = {k: v if isinstance(v, bytes) else v.encode() for k, v in form.items()}
            body = multipart([*((k, v, None) for k, v in encoded.items()), ("contacts", CSV, "c.csv")])
            assert BOUNDARY.encode() not in b"".join(encoded.values())
            before = bridge.run(table_counts(bridge.api))
            reply = bridge.post_form(body)
            seen[reply.status] = seen.get(reply.status, 0) + 1
            text = {k: as_text(v) for k, v in form.items()}
            check_outcome(bridge, reply, before, CSV, (text.get("default_region") or "").strip().upper() or None)
            if reply.status == 201:
                got = reply.body
                assert got["name"] == (text["name"] or "").strip()
                for field, (lo, hi) in INT_FIELDS.items():
                    raw = text.get(field)
                    if raw is not None and raw.strip():
                        assert lo <= got[field] <= hi and got[field] == int(raw.strip()), (field, raw, got[field])
                assert (got["scheduled_at"] is not None) == (got["status"] == "scheduled")
            else:
                err = reply.error()
                assert err["error_id"] == "invalid_field", err
                # The error names a field that was sent, or the one required field when it was not. A value
                # sent under the reference API's name (agent_id) is reported under dialerd's (destination).
                sent = set(form) | {ALIASES.get(f, f) for f in form} | {"name"}
                assert err["details"].get("field") in sent, (form, err)
                assert err["error"].startswith(err["details"]["field"] + ":"), err

        check()
        assert seen.get(201, 0) >= n // 10 and seen.get(400, 0) >= n // 10, seen  # both sides were exercised

    await run_property(offline_api, prop)


# ---- 2. scheduled_at: RFC 3339 and everything near it ------------------------------------------------------


async def test_scheduled_at_variants(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["schedule"]

    def prop(bridge: Bridge) -> None:
        @fuzz_settings(n)
        @given(stamp=rfc3339())
        @example(stamp="2035-06-30T23:59:60Z")  # a leap second: RFC 3339 allows it, Python cannot hold it
        @example(stamp="9999-12-31T23:59:59.999999Z")
        @example(stamp="9999-12-31T23:59:59-00:01")  # past year 9999 once in UTC
        @example(stamp="0001-01-01T00:00:00+01:00")  # before year 1 once in UTC
        @example(stamp="2035-01-01T00:00:00")  # no offset
        @example(stamp="2035-01-01t00:00:00z")
        @example(stamp="2035-01-01T00:00:00+14:00")
        def check(stamp: str) -> None:
            before = bridge.run(table_counts(bridge.api))
            reply = bridge.post_form(multipart([("name", b"s", None), ("scheduled_at", stamp.encode(), None),
                                                ("contacts", CSV, "c.csv")]))
            check_outcome(bridge, reply, before, CSV, None)
            instant = strict_instant(stamp)
            now = datetime.now(UTC)
            if reply.status == 201:
                got = datetime.fromisoformat(reply.body["scheduled_at"])
                assert reply.body["status"] == "scheduled" and got > now
                if instant is not None:  # milliseconds in the answer
                    assert abs(got - instant) < timedelta(milliseconds=1), (stamp, got, instant)
            else:
                err = reply.error()
                assert err["details"] == {"field": "scheduled_at"}, err
                # Everything RFC 3339 calls valid, representable and in the future is accepted.
                assert instant is None or instant <= now + timedelta(seconds=5), (stamp, err)

        check()

    await run_property(offline_api, prop)


# ---- 3. contacts: arbitrary bytes ----------------------------------------------------------------------


def splice(base: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(base)), st.integers(0, 8), st.binary(max_size=12)).map(
        lambda t: base[: t[0]] + t[2] + base[t[0] + t[1]:]
    )


CSV_BYTES = st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=600).map(lambda b: b"phone_number,x\n" + b),
    splice(CSV),
    splice(b"\xef\xbb\xbfsep=;\nTel;Name\n+44 20 7946 0958;A\n0044 20 7946 0959;B\n\n\"+1 415 555 0142\";\"C\"\"\"\n"),
    st.sampled_from([b"", b"\x00", b"\xff\xfe" + "phone\n".encode("utf-16-le"), b"PK\x03\x04zip", b"phone\n\"+1",
                     b"\n\n\n", b"phone_number\n", b"phone_number\n" + b"9" * 200_000]),
)


async def test_contacts_arbitrary_bytes(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["bytes"]

    def prop(bridge: Bridge) -> None:
        @fuzz_settings(n)
        @given(data=CSV_BYTES, region=st.sampled_from([None, "US", "gb", "XX"]))
        def check(data: bytes, region: str | None) -> None:
            fields = [("name", b"bytes", None)] + ([("default_region", region.encode(), None)] if region else [])
            before = bridge.run(table_counts(bridge.api))
            reply = bridge.post_form(multipart([*fields, ("contacts", data, "c.csv")]))
            check_outcome(bridge, reply, before, data, region.upper() if region else None)
            if reply.status != 201:
                err = reply.error()
                assert err["error_id"].startswith("csv_") or err["details"].get("field") == "default_region", err

        check()

    await run_property(offline_api, prop)


# ---- 4. contacts: generated tables, checked against what was generated ------------------------------------

GOOD_NUMBERS = {  # as written -> E.164
    "+14155550142": "+14155550142", "+1 415 555 0143": "+14155550143", "+1 (415) 555-0144": "+14155550144",
    "+1.415.555.0145": "+14155550145", " +44 20 7946 0958 ": "+442079460958", "+49 30 123456": "+4930123456",
}
BAD_NUMBERS = ["", "12", "abc", "+1 415 555", "1-800-FLOWERS", "+14155550142 x12", "+999 1234 5678", "   "]
VALUE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    delimiter: str
    quote_all: bool
    newline: str
    sep_line: bool
    final_newline: bool
    blank_before: int

    def text(self) -> tuple[str, list[int]]:
        """The CSV text and the physical line each data row starts on."""

        def cell(value: str) -> str:
            special = self.quote_all or value != value.strip(" ") or any(c in value for c in ',;\t"\r\n')
            return '"' + value.replace('"', '""') + '"' if special else value

        def line_breaks(text: str) -> int:
            return text.count("\n") + text.count("\r") - text.count("\r\n")

        out = self.newline * self.blank_before + (f"sep={self.delimiter}{self.newline}" if self.sep_line else "")
        out += self.delimiter.join(cell(h) for h in self.header)
        starts = []
        for row in self.rows:
            out += self.newline
            starts.append(line_breaks(out) + 1)
            out += self.delimiter.join(cell(v) for v in row)
        return out + (self.newline if self.final_newline else ""), starts


@st.composite
def tables(draw: st.DrawFn) -> Table:
    extra = draw(st.lists(st.text("abcdefghij", min_size=1, max_size=6), unique=True, max_size=3))
    header = ["phone_number", *(f"f_{e}" for e in extra)]
    draw(st.randoms()).shuffle(header)
    phone = header.index("phone_number")
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        row = [draw(st.text(VALUE_CHARS, max_size=10)) for _ in header]
        row[phone] = draw(st.one_of(st.sampled_from(sorted(GOOD_NUMBERS)), st.sampled_from(BAD_NUMBERS)))
        rows.append(row)
    delimiter = draw(st.sampled_from(",;\t"))
    return Table(header, rows, delimiter, draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n", "\r"])),
                 # "sep=" is how a one-column file names a delimiter that no header cell shows.
                 draw(st.booleans()) or len(header) == 1, draw(st.booleans()), draw(st.integers(0, 2)))


async def test_contacts_generated_tables(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["tables"]

    def prop(bridge: Bridge) -> None:
        @fuzz_settings(n)
        @given(table=tables(), encoding=st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]),
               nul_at=st.one_of(st.none(), st.integers(0, 10**6)))
        def check(table: Table, encoding: str, nul_at: int | None) -> None:
            text, starts = table.text()
            data = text.encode(encoding, errors="replace")
            if nul_at is not None:
                nul_at %= len(data) + 1
                data = data[:nul_at] + b"\x00" + data[nul_at:]
            before = bridge.run(table_counts(bridge.api))
            reply = bridge.post_form(multipart([("name", b"table", None), ("contacts", data, "c.csv")]))
            check_outcome(bridge, reply, before, data, None)
            if nul_at is not None:
                # A NUL is binary; in UTF-16 it also shifts every later byte, so any refusal will do.
                allowed = ("csv_binary", "csv_not_utf8", "csv_encoding_unknown")
                assert reply.status == 400, reply.body
                assert encoding == "utf-16" or reply.error()["error_id"] in allowed, reply.body
                return
            try:
                decoded: str | None = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError:
                decoded = None
            if decoded is None and encoding == "utf-16":
                decoded = data.decode("utf-16")  # its BOM says so, and the import must read it as such
            elif decoded is None:  # Latin-1 bytes that are not UTF-8: a detected code page, or a refusal
                if reply.status != 201:
                    refusals = ("csv_encoding_unknown", "csv_not_utf8", "csv_no_valid_numbers")
                    assert reply.error()["error_id"] in refusals, reply.body
                    return
                assert reply.body["import"]["encoding_source"] == "detected", reply.body["import"]
                decoded = data.decode(reply.body["import"]["encoding"])
            if decoded != text:  # "?" for what Latin-1 could not encode: the generic checks above only
                return
            # The file reads as generated: the oracle is the generated table itself.
            expected: dict[str, tuple[int, str, str, dict[str, str]]] = {}
            for row, line in zip(table.rows, starts, strict=True):
                raw = row[table.header.index("phone_number")]
                if raw in GOOD_NUMBERS and GOOD_NUMBERS[raw] not in expected:
                    fields = {h: v.strip() for h, v in zip(table.header, row, strict=True) if h != "phone_number"}
                    expected[GOOD_NUMBERS[raw]] = (line, GOOD_NUMBERS[raw], raw.strip(), fields)
            if not expected:
                assert reply.status == 400 and reply.error()["error_id"] == "csv_no_valid_numbers", reply.body
                return
            assert reply.status == 201, reply.body
            assert bridge.run(stored_contacts(bridge.api, reply.body["id"])) == sorted(expected.values())
            assert reply.body["import"]["delimiter"] == table.delimiter

        check()

    await run_property(offline_api, prop)


# ---- 5. query parameters on every GET route ----------------------------------------------------------------

QUERY_KEYS = st.one_of(
    st.sampled_from(["limit", "offset", "status", "last_event_id", "after_id", "Limit", "page", "", "limit[]"]),
    ANY_TEXT,
)
QUERY_VALUES = st.one_of(
    st.integers(-3, 1200).map(str), INTEGERS, ANY_TEXT, WHITESPACE, FLOATS, st.just("9" * 400),
    st.sampled_from([s.value for s in ContactStatus] + [s.value for s in VISIBLE] + ["RUNNING", "", "%"]),
)
ALLOWED = {"list": {"limit", "offset", "status"}, "get": set(),
           "contacts": {"limit", "offset", "status", "after_id"}, "events": {"last_event_id"}}
CLEAN_INT = re.compile(r"[0-9]{1,9}")


def encode_query(pairs: list[tuple[str, str]], raw: bool) -> str:
    if raw:  # as a careless client would: only what breaks the URL is escaped
        return "&".join(urllib.parse.quote(k, safe="%=") + "=" + urllib.parse.quote(v, safe="%") for k, v in pairs)
    return urllib.parse.urlencode(pairs)


def clean_value(route: str, key: str, value: str) -> bool:
    if value == "":
        return True
    if key in ("limit", "offset", "last_event_id", "after_id"):
        if not CLEAN_INT.fullmatch(value):
            return False
        return 1 <= int(value) <= 1000 if key == "limit" else True
    statuses = ContactStatus if route == "contacts" else VISIBLE
    return value in {s.value for s in statuses}


async def stopped_campaign(api: Api) -> str:
    status, body = await api.create(CSV)
    assert status == 201, body
    status, body = await api.call("POST", f"/api/v1/campaigns/{body['id']}/stop")
    assert status == 200, body
    return str(body["id"])


async def test_get_routes_with_arbitrary_query(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["query"]
    cid = await stopped_campaign(offline_api)  # terminal, so its event stream ends by itself
    paths = {"list": "/api/v1/campaigns", "get": f"/api/v1/campaigns/{cid}",
             "contacts": f"/api/v1/campaigns/{cid}/contacts", "events": f"/api/v1/campaigns/{cid}/events"}

    def prop(bridge: Bridge) -> None:
        @fuzz_settings(n)
        @given(route=st.sampled_from(sorted(paths)), pairs=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4),
               raw=st.booleans())
        @example(route="list", pairs=[("limit", "1"), ("limit", "2")], raw=False)
        @example(route="contacts", pairs=[("offset", "9" * 400)], raw=False)
        @example(route="events", pairs=[("last_event_id", "-1")], raw=False)
        @example(route="events", pairs=[("last_event_id", "%FF")], raw=True)
        @example(route="list", pairs=[("%ZZ", "%00")], raw=True)
        def check(route: str, pairs: list[tuple[str, str]], raw: bool) -> None:
            qs = encode_query(pairs, raw)
            url = yarl.URL(bridge.api.base + paths[route] + ("?" + qs if qs else ""), encoded=True)
            sent = list(url.query.items())  # decoded exactly as the server decodes them
            reply = bridge.run(bridge.request("GET", url))
            assert reply.status in (200, 400), (reply.status, reply.body)
            keys = [k for k, _ in sent]
            allowed = ALLOWED[route]
            unknown_or_repeated = any(k not in allowed for k in keys) or len(set(keys)) != len(keys)
            values = dict(sent)
            # Keyset and offset paging do not mix: after_id with a non-zero offset is refused.
            mixed_paging = values.get("after_id") and values.get("offset", "").strip("0 ")
            if not unknown_or_repeated and not mixed_paging and all(clean_value(route, k, v) for k, v in sent):
                assert reply.status == 200, (sent, reply.body)
            if reply.status == 400:
                err = reply.error()
                named = err["details"].get("parameter", err["details"].get("field"))
                assert named in keys, (sent, err)
                assert named in err["error"] or repr(named) in err["error"], err
                return
            assert not unknown_or_repeated, (sent, reply.body)
            if route == "events":
                assert reply.content_type == "text/event-stream" and b"event: end" in reply.body
            elif route != "get":
                for key, default in (("limit", 50 if route == "list" else 100), ("offset", 0)):
                    text = values.get(key, "").strip()
                    assert reply.body[key] == (int(text) if text else default), (sent, reply.body)
            # Accepted values we do not call clean are integers all the same: padded, "-0", 10-12 digits.
            for k, v in sent:
                if not clean_value(route, k, v):
                    assert k != "status" and v.strip().lstrip("-").isascii() and v.strip().lstrip("-").isdigit(), sent

        check()

    await run_property(offline_api, prop)
    # And the clean side of the oracle: every clean combination is a 200.
    for route, path in paths.items():
        for key in ALLOWED[route]:
            value = {"status": "cancelled" if route == "contacts" else "completed"}.get(key, "1")
            status, _body = await offline_api.call("GET", f"{path}?{key}={value}")
            assert status == 200, (route, key, _body)


# ---- 6. path ids ----------------------------------------------------------------------------------------

ID_ROUTES = [("GET", "{}"), ("DELETE", "{}"), ("GET", "{}/contacts"), ("GET", "{}/events"), ("POST", "{}/start"),
             ("POST", "{}/pause"), ("POST", "{}/resume"), ("POST", "{}/stop")]
PATH_IDS = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=200).map(lambda s: urllib.parse.quote(s, safe="")),
    st.sampled_from([".", "..", "...", "%2e%2e", "%00", "a%00b", "%ED%A0%80", "%FF", "%", "%zz", "x" * 6000,
                     "cmp_" + "0" * 20, "cmp_%00", "%2F", "a%2F..%2Fb", "%252e", "~", "cmp_doesnotexist"]),
)


async def test_path_ids_are_json_404(offline_api: Api) -> None:
    n = EXAMPLES[backend(offline_api)]["ids"]
    other = (await offline_api.create(CSV, tenant="globex"))[1]["id"]  # exists, but not for acme

    def prop(bridge: Bridge) -> None:
        @fuzz_settings(n)
        @given(route=st.sampled_from(ID_ROUTES), pid=st.one_of(PATH_IDS, st.just(other)))
        def check(route: tuple[str, str], pid: str) -> None:
            method, template = route
            url = yarl.URL(bridge.api.base + "/api/v1/campaigns/" + template.format(pid), encoded=True)
            reply = bridge.run(bridge.request(method, url))
            assert reply.status == 404, (method, url, reply.status, reply.body)
            assert reply.error()["error_id"] in ("campaign_not_found", "route_not_found"), reply.body

        check()

    await run_property(offline_api, prop)
    status, body = await offline_api.call("GET", f"/api/v1/campaigns/{other}", tenant="globex")
    assert status == 200 and body["status"] == "draft"  # the probing touched nothing


@SQLITE_ONLY
async def test_request_line_over_the_limit_is_refused_not_dropped(offline_api: Api) -> None:
    # aiohttp's HTTP parser refuses it before the app sees the request, so the body is aiohttp's text.
    reply = await Bridge(offline_api).request("GET", "/api/v1/campaigns/" + "x" * 20_000)
    assert reply.status in (400, 414), reply


# ---- 7. malformed bodies ---------------------------------------------------------------------------------


def part(headers: str, value: bytes) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + value + b"\r\n"


NAME = part('Content-Disposition: form-data; name="name"', b"m")
FILE = part('Content-Disposition: form-data; name="contacts"; filename="c.csv"', CSV)
END = f"--{BOUNDARY}--\r\n".encode()
NESTED = part("Content-Type: multipart/mixed; boundary=inner",
              b"--inner\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--inner--")
MALFORMED: dict[str, tuple[str, bytes, set[int], set[str]]] = {  # content type, body, statuses, error ids
    # JSON is a create body of its own (issue 9, item 7): malformed JSON, or JSON without its contacts.
    "json": ("application/json", b'{"name": "x"}', {400}, {"missing_contacts"}),
    "json cut off": ("application/json", b'{"name": "x", "contacts": [', {400}, {"invalid_json"}),
    "json array": ("application/json", b'[{"phone_number": "+14155550100"}]', {400}, {"invalid_json"}),
    "json contacts not objects": ("application/json", b'{"name": "x", "contacts": [1]}', {400}, {"invalid_field"}),
    "urlencoded": ("application/x-www-form-urlencoded", b"name=x&contacts=y", {400}, {"invalid_content_type"}),
    "text": ("text/plain", b"phone_number\n+14155550100\n", {400}, {"invalid_content_type"}),
    "no content type": ("", NAME + FILE + END, {400}, {"invalid_content_type"}),
    "multipart/mixed": (f"multipart/mixed; boundary={BOUNDARY}", NAME + FILE + END, {400}, {"invalid_content_type"}),
    "no boundary": ("multipart/form-data", NAME + FILE + END, {400}, {"invalid_form"}),
    "empty boundary": ("multipart/form-data; boundary=", NAME + FILE + END, {400}, {"invalid_form"}),
    "wrong boundary": ("multipart/form-data; boundary=other", NAME + FILE + END, {400}, {"invalid_form"}),
    "boundary too long": ("multipart/form-data; boundary=" + "b" * 100, NAME + FILE + END, {400}, {"invalid_form"}),
    "empty body": (MULTIPART, b"", {400}, {"invalid_form"}),
    "truncated in file": (MULTIPART, NAME + FILE[:60], {400}, {"invalid_form", "unknown_field"}),
    "truncated, no end": (MULTIPART, NAME + FILE, {400}, {"invalid_form"}),
    "part without a name": (MULTIPART, part("Content-Disposition: form-data", b"x") + NAME + FILE + END, {400},
                            {"unknown_field"}),
    "part without disposition": (MULTIPART, part("Content-Type: text/plain", b"x") + FILE + END, {400},
                                 {"unknown_field"}),
    "bad disposition param": (MULTIPART, part("Content-Disposition: form-data; name*=UTF-8''%ff%fe", b"x") + FILE + END,
                              {400}, {"invalid_form", "unknown_field"}),
    "bad disposition": (MULTIPART, part('Content-Disposition: form-data; name="a;b=c"; ;;', b"x") + FILE + END, {400},
                        {"invalid_form", "unknown_field"}),
    "garbage part header": (MULTIPART, part("not a header", b"x") + FILE + END, {400}, {"invalid_form"}),
    "control char in name": (MULTIPART, part('Content-Disposition: form-data; name="na\x01me"', b"x") + FILE + END,
                             {400}, {"invalid_form"}),
    "nested multipart": (MULTIPART, NESTED + NAME + FILE + END, {400}, {"invalid_form"}),
    "no contacts": (MULTIPART, NAME + END, {400}, {"missing_contacts"}),
    "contacts twice": (MULTIPART, NAME + FILE + FILE + END, {400}, {"invalid_field"}),
    "field over 4 KiB": (MULTIPART, part('Content-Disposition: form-data; name="name"', b"x" * 5000) + FILE + END,
                         {400}, {"invalid_field"}),
    "10 MB field value": (MULTIPART, part('Content-Disposition: form-data; name="name"', b"x" * 10_000_000) + FILE + END,
                          {400, 413}, {"invalid_field", "payload_too_large"}),
    "1 MB part header": (MULTIPART, part("X-Pad: " + "p" * 1_000_000, b"x") + FILE + END, {400}, {"invalid_form"}),
    "undecodable field": (MULTIPART, part('Content-Disposition: form-data; name="name"', b"\xff\xfe") + FILE + END,
                          {400}, {"invalid_field"}),
}


async def test_malformed_bodies_are_json_4xx_and_write_nothing(offline_api: Api) -> None:
    bridge = Bridge(offline_api)
    before = await table_counts(offline_api)
    for label, (content_type, body, statuses, error_ids) in MALFORMED.items():
        headers = {"Content-Type": content_type} if content_type else {}
        reply = await bridge.request("POST", "/api/v1/campaigns", headers=headers, data=io.BytesIO(body))
        assert reply.status in statuses, (label, reply.status, reply.body)
        assert reply.error()["error_id"] in error_ids, (label, reply.body)
    assert await table_counts(offline_api) == before
    # "contacts" sent as a plain text field (no filename) is read like the file: a choice, asserted.
    reply = await bridge.request("POST", "/api/v1/campaigns", headers={"Content-Type": MULTIPART},
                                 data=multipart([("name", b"t", None), ("contacts", CSV, None)]))
    assert reply.status == 201 and reply.body["import"]["contacts"] == 2, reply.body


async def test_header_abuse(offline_api: Api) -> None:
    bridge = Bridge(offline_api)
    cid = await stopped_campaign(offline_api)
    key = offline_api.keys["acme"]
    big = "h" * 8000  # just under aiohttp's 8190-byte line limit, so the app itself must cope
    reply = await bridge.request("GET", "/api/v1/campaigns", headers={"X-Pad": big})
    assert reply.status == 200
    reply = await bridge.request("GET", "/api/v1/campaigns", tenant=None, headers={"Authorization": "Bearer " + big})
    assert reply.status == 401 and reply.error()["error_id"] == "unauthorized"
    reply = await bridge.request("GET", f"/api/v1/campaigns/{cid}/events", headers={"Last-Event-ID": "9" * 8000})
    assert reply.status == 400 and reply.error()["details"] == {"field": "Last-Event-ID"}
    reply = await bridge.request("GET", f"/api/v1/campaigns/{cid}/events?last_event_id=x")
    assert reply.status == 400 and reply.error()["details"] == {"field": "last_event_id"}
    reply = await bridge.request("POST", "/api/v1/campaigns", headers={"Content-Type": "multipart/form-data; boundary="
                                                                        + "b" * 7000}, data=b"x")
    assert reply.status == 400 and reply.error()["error_id"] == "invalid_form"
    # Raw bytes: an Authorization that is not UTF-8 is just a wrong key (it was a 500).
    for auth in (b"Bearer dlr_k\xff_x", f"Bearer {key[:-2]}".encode() + b"\xff\xfe"):
        status, head, body = await raw_exchange(offline_api, b"GET /api/v1/campaigns HTTP/1.1\r\nHost: t\r\n"
                                                b"Authorization: " + auth + b"\r\nConnection: close\r\n\r\n")
        assert status == 401 and json.loads(body)["error_id"] == "unauthorized", body
    # Over aiohttp's limits the HTTP parser answers (text/plain) before the app: refused, never dropped.
    for request in (b"GET /api/v1/campaigns HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"h" * 20_000 + b"\r\n\r\n",
                    b"GET /api/v1/campaigns HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 40_000 + b"\r\n",
                    b"GET /api/v1/caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"):
        status, _head, _body = await raw_exchange(offline_api, request)
        assert status in (400, 413, 414, 431), status


async def raw_exchange(api: Api, request: bytes) -> tuple[int, bytes, bytes]:
    """Send bytes on a fresh connection, read the whole answer (the server closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.daemon.port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # the server may answer and close before reading it all
            await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
        return status, head, body
    finally:
        writer.close()
        await writer.wait_closed()


# ---- 8. oversized bodies are refused early -------------------------------------------------------------------

FIFTY_MB = 50 * 1024 * 1024


@SQLITE_ONLY
async def test_declared_50mb_body_is_refused_before_it_is_sent(offline_api: Api) -> None:
    before = await table_counts(offline_api)
    reader, writer = await asyncio.open_connection("127.0.0.1", offline_api.daemon.port)
    try:
        writer.write(
            f"POST /api/v1/campaigns HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {offline_api.keys['acme']}\r\n"
            f"Content-Type: {MULTIPART}\r\nContent-Length: {FIFTY_MB}\r\n\r\n".encode() + NAME
        )
        await writer.drain()
        # Only the headers and the first part are out: the answer comes without waiting for 50 MB.
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"application/json" in head
    finally:
        writer.close()
        await writer.wait_closed()
    assert await table_counts(offline_api) == before


@SQLITE_ONLY
async def test_streamed_50mb_upload_is_refused_while_still_sending(offline_api: Api) -> None:
    before = await table_counts(offline_api)
    limit = offline_api.daemon.settings.upload_limit_bytes
    sent = 0
    chunk = (b"+14155550100,padding-" + b"x" * 80 + b"\n") * 2600  # ~260 KB

    async def slow_body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"contacts\"; filename=\"c.csv\"\r\n\r\n".encode()
        yield b"phone_number,pad\n"
        while sent < FIFTY_MB:
            sent += len(chunk)
            yield chunk
            await asyncio.sleep(0.005)  # a slow client: 50 MB would take ~1 s of sleeps alone
        yield b"\r\n" + END

    # No Content-Length (chunked): the limit is enforced while the file streams in.
    async with offline_api.session.post(
        offline_api.base + "/api/v1/campaigns", data=slow_body(),
        headers={**offline_api.auth(), "Content-Type": MULTIPART},
    ) as resp:
        answered_at = sent
        assert resp.status == 413, await resp.text()
        assert (await resp.json())["error_id"] == "payload_too_large"
    assert limit <= answered_at < FIFTY_MB / 2, (limit, answered_at)
    assert await table_counts(offline_api) == before


# ---- 9. action routes ignore bodies ---------------------------------------------------------------------------


@SQLITE_ONLY
async def test_action_routes_ignore_bodies(offline_api: Api) -> None:
    """Chosen behaviour: start/pause/resume/stop take no body; one sent is ignored, never parsed or refused."""
    bridge = Bridge(offline_api)
    status, body = await offline_api.create(CSV)
    cid = body["id"]
    bodies: list[tuple[dict[str, str], Any]] = [
        ({"Content-Type": "application/json"}, b'{"status": "completed", "force": true}'),
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": MULTIPART}, NAME + END),
        ({"Content-Type": "application/octet-stream"}, io.BytesIO(b"\x00" * 2_000_000)),  # over client_max_size
    ]
    steps = [("start", 200, "running"), ("start", 409, "running"), ("pause", 200, "paused"),
             ("resume", 200, "running"), ("stop", 200, "completed"), ("resume", 409, "completed")]
    for i, (action, expected, state) in enumerate(steps):
        headers, data = bodies[i % len(bodies)]
        reply = await bridge.request("POST", f"/api/v1/campaigns/{cid}/{action}", headers=headers, data=data)
        assert reply.status == expected, (action, reply.body)
        if expected == 200:
            assert reply.body["status"] == state
        else:
            assert reply.error()["error_id"] == "invalid_transition"
        _s, now = await offline_api.call("GET", f"/api/v1/campaigns/{cid}")
        assert now["status"] == state
    reply = await bridge.request("POST", "/api/v1/campaigns/cmp_nope/start", headers={"Content-Type": "application/json"},
                                 data=b'{"x": 1}')
    assert reply.status == 404 and reply.error()["error_id"] == "campaign_not_found"
