"""The live dashboard in a real browser, following a real campaign on the local Asterisk.

The browser is Debian's ``chromium`` (``apt-get install chromium``; Playwright is not usable here, it
downloads a browser of its own). The test starts it headless with ``--remote-debugging-port=0``,
reads the port Chromium picked from ``<profile>/DevToolsActivePort`` and drives one page over the
DevTools protocol with the small client below (commands and events on the browser's websocket,
flat sessions). The key is typed into the page's password field with ``Input.insertText`` like a
user would; it never appears in a URL, which the test checks on every request the browser made.

``chromium`` comes from Debian (``.ci/setup`` installs it); without it the test fails, it never skips.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from dialerd.logs import JsonFormatter
from dialerd.settings import load_settings
from tests.conftest import Api, free_port, make_key, start_daemon
from tests.live import all_contacts, live_api, numbers, pbx_settings_env, read_sse, wait_status

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "bench" / "out" / "dashboard-running.png"
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
]
VIEWPORT = {"width": 1360, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
# By the last two digits (asterisk/README.md): the three 30-39 calls stay up ~20 s and keep the
# campaign running long enough to catch it mid-run; the rest answer for 2 s or fail in every way.
SUFFIXES = [30, 31, 32, 0, 40, 1, 60, 2, 70, 3, 80, 4, 41, 5, 61, 6, 71, 7, 81, 8]
STATUSES = ("pending", "originated", "connected", "completed", "failed", "cancelled")
CONTACT_EVENTS = frozenset(STATUSES)


class CdpError(RuntimeError):
    """A DevTools command failed, or the page threw."""


class Cdp:
    """Just enough of the Chrome DevTools Protocol: one page, attached as a flat session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            waiter = self._waiting.pop(data["id"], None) if "id" in data else None
            if waiter is None:
                self.events.append(data)
            elif not waiter.done():
                if "error" in data:
                    waiter.set_exception(CdpError(f"{data['error']}"))
                else:
                    waiter.set_result(data.get("result", {}))
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(CdpError("the browser closed the DevTools connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False,
                   timeout: float = 15.0) -> dict[str, Any]:
        msg_id = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = waiter
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if self.session is not None and not browser:
            msg["sessionId"] = self.session
        await self.ws.send_json(msg)
        return await asyncio.wait_for(waiter, timeout)

    async def js(self, expression: str) -> Any:
        """Evaluates ``expression`` in the page and returns its value (awaiting a promise)."""
        reply = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what} within {timeout:.0f}s ({expression})")
            await asyncio.sleep(0.1)

    def named(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e.get("method") == method]

    async def close(self) -> None:
        with contextlib.suppress(CdpError, TimeoutError, ConnectionError):
            await self.send("Browser.close", browser=True, timeout=5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _devtools_endpoint(profile: Path, proc: asyncio.subprocess.Process, timeout: float = 20.0) -> str:
    """Chromium writes the port it chose and the browser target's path into DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while True:
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if proc.returncode is not None:
            raise AssertionError(f"chromium exited {proc.returncode} before opening DevTools (see chromium.log)")
        if time.monotonic() > deadline:
            raise AssertionError(f"chromium wrote no {port_file} within {timeout:.0f}s (see chromium.log)")
        await asyncio.sleep(0.05)


@pytest.fixture
def chromium_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    with (tmp_path / "chromium.log").open("wb") as f:
        yield f


@contextlib.asynccontextmanager
async def headless_chromium(tmp_path: Path, log: IO[bytes]) -> AsyncIterator[Cdp]:
    """A headless Chromium with a throwaway profile, and a DevTools client attached to a blank page."""
    assert CHROMIUM is not None, "needs Debian's chromium: .ci/setup installs it (apt-get install chromium)"
    profile = tmp_path / "chromium-profile"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank", stdout=log, stderr=log,
    )
    try:
        endpoint = await _devtools_endpoint(profile, proc)
        async with aiohttp.ClientSession() as session, session.ws_connect(endpoint, max_msg_size=0) as ws:
            cdp = Cdp(ws)
            try:
                target = await cdp.send("Target.createTarget", {"url": "about:blank"})
                attached = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
                cdp.session = attached["sessionId"]
                for domain in ("Page", "Network", "Runtime", "Log"):
                    await cdp.send(f"{domain}.enable")
                await cdp.send("Emulation.setDeviceMetricsOverride", VIEWPORT)
                yield cdp
            finally:
                await cdp.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every log record of the in-process daemon at DEBUG, formatted as dialerd writes it."""
    lines: list[str] = []
    formatter = JsonFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Capture(logging.DEBUG)
    logger = logging.getLogger("dialerd")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger().removeHandler(handler)
        logger.setLevel(old_level)


async def page_counts(cdp: Cdp) -> dict[str, int]:
    texts = await cdp.js(
        "Object.fromEntries(" + json.dumps(list(STATUSES)) +
        ".map(s => [s, document.querySelector(`[data-testid=count-${s}]`).textContent]))"
    )
    return {s: int(t.replace(",", "")) for s, t in texts.items()}


async def type_key(cdp: Cdp, key: str) -> None:
    await cdp.js("document.getElementById('api-key').focus()")
    await cdp.send("Input.insertText", {"text": key})
    await click(cdp, "[data-testid=connect]")


async def click(cdp: Cdp, selector: str) -> None:
    found = await cdp.js(f"(b => !!b && !b.disabled && (b.click(), true))(document.querySelector({json.dumps(selector)}))")
    assert found, f"no enabled {selector} to click"


async def screenshot(cdp: Cdp, *paths: Path) -> None:
    """The whole page, below the fold too."""
    size = (await cdp.send("Page.getLayoutMetrics"))["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = await cdp.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
    png = base64.b64decode(shot["data"])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)


async def test_dashboard_follows_a_running_campaign(tmp_path: Path, chromium_log: IO[bytes]) -> None:
    with captured_logs() as log_lines:
        async with live_api(tmp_path, sse_snapshot_interval=1.0) as api:
            key = api.keys["acme"]
            await _check_page_is_public(api)
            status, body = await api.create(numbers([0]), name="Another campaign")
            assert status == 201, body
            other = body["id"]
            status, body = await api.create(numbers(SUFFIXES), name="Spring reminders", max_concurrent_calls=5,
                                            caller_id="+14155550000")
            assert status == 201, body
            cid = body["id"]
            base = api.base
            async with headless_chromium(tmp_path, chromium_log) as cdp:
                await _drive(cdp, api, key, cid, tmp_path)
                await _finished_keeps_its_figures(cdp, api, cid, other)
                requests = cdp.named("Network.requestWillBeSent")
                console = cdp.named("Runtime.consoleAPICalled")
                thrown = cdp.named("Runtime.exceptionThrown")
                errors = [e["entry"] for e in cdp.named("Log.entryAdded") if e["entry"]["level"] == "error"]
                dom = await cdp.js("document.documentElement.outerHTML + location.href")

    # The page ran cleanly: no uncaught error, no console error, no browser error (a CSP violation, a
    # failed load) beyond the one 401 the wrong key earned.
    assert not thrown, thrown
    assert not [c for c in console if c["type"] == "error"], console
    assert errors and {e["url"].split("?")[0] for e in errors} == {f"{base}/api/v1/campaigns"}, errors
    # The key went out only as a header: never in a URL, the DOM, the console or the daemon's log.
    urls = [r["request"]["url"] for r in requests]
    assert urls and not [u for u in urls if key in u]
    streams = [r["request"] for r in requests if r["request"]["url"].endswith(f"/campaigns/{cid}/events")]
    assert streams and all(r["headers"].get("Authorization") == f"Bearer {key}" for r in streams)
    assert key not in dom
    assert key not in json.dumps(console)
    assert log_lines and not [line for line in log_lines if key in line]


async def _check_page_is_public(api: Api) -> None:
    async with api.session.get(f"{api.base}/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    async with api.session.get(f"{api.base}/dashboard/sse.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
    async with api.session.get(f"{api.base}/dashboard/dashboard.html") as resp:
        assert resp.status == 404


async def _drive(cdp: Cdp, api: Api, key: str, cid: str, tmp_path: Path) -> None:
    await cdp.send("Page.navigate", {"url": f"{api.base}/dashboard"})
    await cdp.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden",
                       "the key form")
    # A wrong key first: refused, and the form asks again.
    await type_key(cdp, "dlr_not-a-key")
    await cdp.wait_for("document.querySelector('[data-testid=login-error]').textContent.includes('refused')"
                       " && !document.getElementById('login').hidden", "the wrong key refused")
    await type_key(cdp, key)
    row = f"[data-testid=campaign-row][data-campaign-id={json.dumps(cid)}]"
    await cdp.wait_for(f"!!document.querySelector({json.dumps(row)})", "the campaign in the list")
    assert await cdp.js("sessionStorage.getItem('dialerd.apiKey')") == key
    assert await cdp.js("document.getElementById('api-key').value") == ""

    await click(cdp, f"{row} button")
    await cdp.wait_for("document.querySelector('[data-testid=stream-state]').dataset.state === 'live'",
                       "the stream live")
    await cdp.wait_for("document.querySelector('[data-testid=pbx-state]').dataset.connected === 'true'",
                       "the PBX connected")
    await click(cdp, "[data-testid=action-start]")

    # Mid-run: long calls up, some contacts done, a few snapshots drawn.
    await cdp.wait_for(
        "(() => { const n = id => Number(document.querySelector(`[data-testid=${id}]`).textContent);"
        " return document.querySelector('[data-testid=detail-status]').textContent === 'running'"
        " && n('calls-in-flight') >= 3 && n('count-completed') >= 3 && n('count-failed') >= 2"
        " && Number(document.getElementById('chart').dataset.points) >= 4; })()",
        "a campaign mid-run", timeout=30,
    )
    await screenshot(cdp, SCREENSHOT, tmp_path / "dashboard-running.png")
    # The controls act on the real campaign (the long calls keep it from finishing meanwhile).
    for action, status in (("pause", "paused"), ("resume", "running")):
        await click(cdp, f"[data-testid=action-{action}]")
        await cdp.wait_for(f"document.querySelector('[data-testid=detail-status]').textContent === '{status}'",
                           f"the campaign {status}")
        # The "why isn't it dialling" panel follows: paused names its reason, resumed it is gone.
        paused = "!!document.querySelector('[data-testid=why-reasons] li[data-reason=paused]')"
        await cdp.wait_for(paused if status == "paused" else f"!{paused}", f"the why panel {status}")
        if status == "paused":
            assert await cdp.js("document.querySelector('[data-testid=why]').dataset.dialling") == "false"
            assert (await cdp.js("document.querySelector('[data-testid=why-reasons] li[data-reason=paused]')"
                                 ".textContent")).startswith("paused")

    await cdp.wait_for("document.querySelector('[data-testid=stream-state]').dataset.state === 'ended'"
                       " && document.querySelector('[data-testid=detail-status]').textContent === 'completed'",
                       "the campaign completed", timeout=60)
    final = await wait_status(api, cid, "completed", timeout=10)
    events = await read_sse(api, cid, last_event_id="0", max_seconds=20)
    contacts = await all_contacts(api, cid)
    expected = {s: final["contacts"].get(s, 0) for s in STATUSES}
    # The final figures arrive with the GET the page makes on `end`; allow it a moment to land.
    with contextlib.suppress(AssertionError):
        await cdp.wait_for(f"JSON.stringify({json.dumps(list(STATUSES))}.map(s => Number("
                           "document.querySelector(`[data-testid=count-${s}]`).textContent)))"
                           f" === {json.dumps(json.dumps([expected[s] for s in STATUSES], separators=(',', ':')))}",
                           "the final counts", timeout=5)
    await screenshot(cdp, tmp_path / "dashboard-completed.png")

    # Counts per status: what GET /api/v1/campaigns/{id} says.
    assert await page_counts(cdp) == expected
    assert expected["completed"] == 12 and expected["failed"] == 8
    progress = await cdp.js("document.querySelector('[data-testid=progress-text]').textContent")
    assert progress.startswith("20 of 20 contacts done"), progress
    await cdp.wait_for(f"(t => t.includes('20 / 20') && t.includes('completed'))"
                       f"(document.querySelector({json.dumps(row)}).textContent)", "the list row final")

    # Failure reasons: what the contacts say.
    shown = await cdp.js("Object.fromEntries([...document.querySelectorAll('#reasons li[data-reason]')]"
                         ".map(li => [li.dataset.reason, Number(li.querySelector('b').textContent)]))")
    assert shown == dict(Counter(c["failure_reason"] for c in contacts if c["status"] == "failed"))

    # The log: the stream's contact events, newest first, each with its number.
    logged = await cdp.js("[...document.querySelectorAll('[data-testid=event-log] li')]"
                          ".filter(li => li.dataset.kind !== 'campaign')"
                          ".map(li => [Number(li.dataset.eventId), li.dataset.kind, li.textContent])")
    contact_events = [e for e in reversed(events) if e.event in CONTACT_EVENTS and e.data is not None]
    assert len(logged) >= 20
    want = contact_events[: len(logged)]
    assert [(i, k) for i, k, _ in logged] == [(e.data["id"], e.event) for e in want if e.data]
    for (_, _, text), e in zip(logged, want, strict=True):
        assert e.data and e.data["phone_number"] in text

    # The chart: one point per snapshot plus the closing one, drawn as lines.
    points = await cdp.js("Number(document.getElementById('chart').dataset.points)")
    assert points >= 6
    for series in ("inFlight", "completed", "failed"):
        coords = await cdp.js(f"document.querySelector('#chart polyline[data-series={series}]')"
                              ".getAttribute('points').split(' ').length")
        assert coords == points, series


async def detail_state(cdp: Cdp) -> dict[str, Any]:
    """What the detail pane shows: counts, figures (and where they come from), the chart's size and last point."""
    return await cdp.js(  # type: ignore[no-any-return]
        "(() => { const t = id => document.querySelector(`[data-testid=${id}]`);"
        " const chart = document.getElementById('chart');"
        " return { title: t('detail-title').textContent, status: t('detail-status').textContent,"
        " stream: t('stream-state').dataset.state, source: t('figures').dataset.source,"
        " counts: Object.fromEntries(" + json.dumps(list(STATUSES)) +
        ".map(s => [s, Number(t(`count-${s}`).textContent)])),"
        " cpm: t('calls-per-minute').textContent, answer: t('answer-rate').textContent,"
        " talk: t('avg-talk').textContent, points: Number(chart.dataset.points),"
        " last: chart.dataset.last ? JSON.parse(chart.dataset.last) : null }; })()"
    )


async def open_campaign(cdp: Cdp, cid: str, name: str) -> None:
    row = f"[data-testid=campaign-row][data-campaign-id={json.dumps(cid)}]"
    await cdp.wait_for(f"!!document.querySelector({json.dumps(row)})", f"{name} in the list")
    await click(cdp, f"{row} button")
    await cdp.wait_for(f"document.querySelector('[data-testid=detail-title]').textContent === {json.dumps(name)}",
                       f"{name} opened")


async def _finished_keeps_its_figures(cdp: Cdp, api: Api, cid: str, other: str) -> None:
    final = await wait_status(api, cid, "completed", timeout=10)
    expected = {s: final["contacts"].get(s, 0) for s in STATUSES}
    # The figures the database gives for the whole run: what a finished campaign must show.
    stats = await api.daemon.store.attempt_stats(cid, datetime.now(UTC))
    answer = f"{math.floor(stats['answered'] / stats['ended'] * 100 + 0.5)}%"
    await cdp.wait_for("document.querySelector('[data-testid=figures]').dataset.source === 'final'",
                       "the final figures after the end")
    ended = await detail_state(cdp)
    assert ended["counts"] == expected and ended["source"] == "final", ended
    assert ended["answer"] == answer, (ended, stats)
    assert abs(float(ended["talk"].removesuffix(" s")) - stats["avg_talk_seconds"]) <= 0.051, (ended, stats)
    assert ended["points"] >= 6 and ended["last"] == {
        **ended["last"], "inFlight": 0, "completed": expected["completed"], "failed": expected["failed"]}

    # Another campaign, then this one again: the same figures and the same chart, not a blank pane.
    await open_campaign(cdp, other, "Another campaign")
    await open_campaign(cdp, cid, "Spring reminders")
    await cdp.wait_for("document.querySelector('[data-testid=stream-state]').dataset.state === 'ended'",
                       "the finished campaign's stream replayed to its end")
    again = await detail_state(cdp)
    assert again == {**ended, "points": again["points"]} and again["points"] == ended["points"], (again, ended)

    # Opened fresh (a new page load, nothing remembered): the final figures from GET and the history,
    # and a chart rebuilt from the replayed transitions.
    await cdp.send("Page.reload")
    await cdp.wait_for("document.readyState === 'complete' && !document.getElementById('app').hidden",
                       "the page again, signed in from the tab's session")
    await open_campaign(cdp, cid, "Spring reminders")
    await cdp.wait_for("document.querySelector('[data-testid=stream-state]').dataset.state === 'ended'"
                       " && document.querySelector('[data-testid=figures]').dataset.source === 'final'"
                       " && document.querySelector('[data-testid=count-completed]').textContent"
                       f" === '{expected['completed']}'", "the finished campaign opened fresh")
    fresh = await detail_state(cdp)
    assert fresh["counts"] == expected and fresh["status"] == "completed", fresh
    assert fresh["answer"] == answer and fresh["talk"] == ended["talk"], (fresh, ended)
    assert fresh["cpm"] != "–"
    assert fresh["points"] >= 10, fresh  # a point per transition
    assert fresh["last"] == {**fresh["last"], "inFlight": 0, "completed": expected["completed"],
                             "failed": expected["failed"]}, fresh
    source = await cdp.js("document.querySelector('[data-testid=chart-source]').textContent")
    assert source == "from the event history"


# ---- the list, the banner and long names, against a daemon whose PBX is unreachable --------------------------

LONG_NAME = "Quarterly customer satisfaction follow-up for the northern region, second wave " * 2 + "(final)"


@contextlib.asynccontextmanager
async def daemon_without_pbx(tmp_path: Path) -> AsyncIterator[Api]:
    """The real daemon and ARI adapter, its ARI URL pointing at a closed loopback port: the PBX is down."""
    env = pbx_settings_env("ari", f"sqlite+aiosqlite:///{tmp_path / 'down.db'}")
    env["DIALERD_ARI_URL"] = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(None, env=env, overrides={"ari_app": f"dialerd-test-down-{os.getpid()}",
                                                       "sse_snapshot_interval": 1.0, "shutdown_grace_period": 0.0})
    daemon = await start_daemon(settings, pbx=None)
    try:
        key = await make_key(daemon, "acme")
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{daemon.port}", session, {"acme": key}, daemon)
    finally:
        await daemon.stop()


async def rows(cdp: Cdp, table: str) -> list[str]:
    return await cdp.js(  # type: ignore[no-any-return]
        f"[...document.querySelectorAll('[data-testid={table}] [data-testid=campaign-row]')]"
        ".map(tr => tr.dataset.campaignId)")


async def set_select(cdp: Cdp, testid: str, value: str) -> None:
    await cdp.js(f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})"
                 f"(document.querySelector('[data-testid={testid}]'))")


async def search(cdp: Cdp, text: str) -> None:
    """Types ``text`` over the search box's content, as a user would (an empty text clears it)."""
    await cdp.js("(i => { i.focus(); i.select(); })(document.querySelector('[data-testid=search]'))")
    if text:
        await cdp.send("Input.insertText", {"text": text})
    else:
        await cdp.js("(i => { i.value = ''; i.dispatchEvent(new Event('input')); })"
                     "(document.querySelector('[data-testid=search]'))")


async def shows_page(cdp: Cdp, api: Api, info: str, **params: str) -> list[str]:
    """Waits until the list's page is the API's page for ``params``; returns its ids."""
    status, body = await api.call("GET", "/api/v1/campaigns", params=params)
    assert status == 200, body
    want = [c["id"] for c in body["campaigns"]]
    await cdp.wait_for(
        f"document.querySelector('[data-testid=page-info]').textContent === {json.dumps(info)}"
        f" && JSON.stringify([...document.querySelectorAll('[data-testid=campaigns] [data-testid=campaign-row]')]"
        f".map(tr => tr.dataset.campaignId)) === {json.dumps(json.dumps(want, separators=(',', ':')))}",
        f"the page {info} for {params}")
    return want


async def test_list_ordering_paging_filter_search_banner_and_long_names(
    tmp_path: Path, chromium_log: IO[bytes]
) -> None:
    async with daemon_without_pbx(tmp_path) as api:
        ids: dict[str, str] = {}
        names = ["Spring launch", "Running early"] + [f"Campaign {i:02d}" for i in range(20)] + [
            "spring follow-up", "SPRING sale", "Autumn", LONG_NAME, "Newest draft"]
        for name in names:
            status, body = await api.create(numbers([0]), name=name)
            assert status == 201, body
            ids[name] = body["id"]
        # The two oldest become running and paused: the newest-first pages would never show them first.
        for name, actions in (("Spring launch", ["start", "pause"]), ("Running early", ["start"])):
            for action in actions:
                status, body = await api.call("POST", f"/api/v1/campaigns/{ids[name]}/{action}")
                assert status == 200, body
        total = len(names)
        # The PBX is down, and the stream's snapshot says so.
        snap = [e for e in await read_sse(api, ids["Running early"], last_event_id=None, until_end=False,
                                          stop_after=1, max_seconds=10) if e.data]
        assert snap and snap[0].data and snap[0].data["type"] == "snapshot" and snap[0].data["pbx_connected"] is False

        async with headless_chromium(tmp_path, chromium_log) as cdp:
            await cdp.send("Page.navigate", {"url": f"{api.base}/dashboard"})
            await cdp.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden",
                               "the key form")
            await type_key(cdp, api.keys["acme"])

            # Banner: dialling is held while the PBX is down, in words that say why.
            await cdp.wait_for("(b => !b.hidden && b.dataset.reason === 'pbx_down')"
                               "(document.querySelector('[data-testid=held-banner]'))", "the PBX-down banner")
            banner = await cdp.js("document.querySelector('[data-testid=held-banner]').textContent")
            assert "Dialling is held" in banner and "PBX is unreachable" in banner, banner

            # Running first, then paused, above the pages, whatever the page shows.
            await cdp.wait_for(f"JSON.stringify([...document.querySelectorAll("
                               f"'[data-testid=active-campaigns] [data-testid=campaign-row]')]"
                               f".map(tr => tr.dataset.campaignId)) === "
                               f"{json.dumps(json.dumps([ids['Running early'], ids['Spring launch']]).replace(' ', ''))}",
                               "running then paused campaigns first")
            assert await cdp.js("document.querySelector('[data-testid=active-total]').textContent") == "(2)"

            # Paging, 10 a page, newest first.
            await set_select(cdp, "page-size", "10")
            page1 = await shows_page(cdp, api, f"1–10 of {total}", limit="10", offset="0")
            assert page1[0] == ids["Newest draft"] and ids["Running early"] not in page1
            assert await cdp.js("document.querySelector('[data-testid=page-prev]').disabled") is True
            await click(cdp, "[data-testid=page-next]")
            await shows_page(cdp, api, f"11–20 of {total}", limit="10", offset="10")
            await click(cdp, "[data-testid=page-next]")
            last = await shows_page(cdp, api, f"21–{total} of {total}", limit="10", offset="20")
            assert last[-1] == ids["Spring launch"]
            assert await cdp.js("document.querySelector('[data-testid=page-next]').disabled") is True
            assert await rows(cdp, "active-campaigns") == [ids["Running early"], ids["Spring launch"]]
            await click(cdp, "[data-testid=page-prev]")
            await shows_page(cdp, api, f"11–20 of {total}", limit="10", offset="10")

            # Status filter: back to the first page, over every campaign.
            await set_select(cdp, "status-filter", "paused")
            assert await shows_page(cdp, api, "1–1 of 1", limit="10", status="paused") == [ids["Spring launch"]]
            await set_select(cdp, "status-filter", "draft")
            await shows_page(cdp, api, f"1–10 of {total - 2}", limit="10", status="draft")

            # Name search, with and without the filter; typed, any case.
            await search(cdp, "SPRING")
            found = await shows_page(cdp, api, "1–2 of 2", limit="10", status="draft", name="spring")
            assert set(found) == {ids["spring follow-up"], ids["SPRING sale"]}
            await set_select(cdp, "status-filter", "")
            found = await shows_page(cdp, api, "1–3 of 3", limit="10", name="spring")
            assert set(found) == {ids["spring follow-up"], ids["SPRING sale"], ids["Spring launch"]}
            await search(cdp, "no such campaign")
            await shows_page(cdp, api, "", limit="10", name="no such campaign")
            assert await cdp.js("document.querySelector('[data-testid=campaigns-empty]').textContent") \
                == "No campaign matches."
            await search(cdp, "")
            await shows_page(cdp, api, f"1–10 of {total}", limit="10")

            # A long name: cut with an ellipsis in the list and in the detail, whole in the title.
            row = f"[data-testid=campaigns] [data-campaign-id={json.dumps(ids[LONG_NAME])}] button"
            cut = await cdp.js(
                f"(b => ({{ title: b.title, text: b.textContent, overflow: getComputedStyle(b).textOverflow,"
                f" cut: b.scrollWidth > b.clientWidth, width: b.getBoundingClientRect().width,"
                f" cell: b.parentElement.getBoundingClientRect().width }}))(document.querySelector({json.dumps(row)}))")
            assert cut["title"] == LONG_NAME and cut["text"] == LONG_NAME, cut
            assert cut["overflow"] == "ellipsis" and cut["cut"] and cut["width"] <= cut["cell"], cut
            table = await cdp.js("document.querySelector('[data-testid=campaigns]').getBoundingClientRect().right"
                                 " <= document.querySelector('.campaigns-card').getBoundingClientRect().right")
            assert table is True
            await open_campaign(cdp, ids[LONG_NAME], LONG_NAME)
            title = await cdp.js("(h => ({ title: h.title, cut: h.scrollWidth > h.clientWidth,"
                                 " overflow: getComputedStyle(h).textOverflow }))"
                                 "(document.querySelector('[data-testid=detail-title]'))")
            assert title == {"title": LONG_NAME, "cut": True, "overflow": "ellipsis"}, title
            await screenshot(cdp, tmp_path / "dashboard-list.png")

            # The running campaign's snapshots (pbx_connected false) keep the banner up.
            await open_campaign(cdp, ids["Running early"], "Running early")
            await cdp.wait_for("document.querySelector('[data-testid=figures]').dataset.source === 'snapshot'",
                               "a snapshot")
            assert await cdp.js("document.querySelector('[data-testid=held-banner]').dataset.reason") == "pbx_down"

            thrown = cdp.named("Runtime.exceptionThrown")
            errors = [e["entry"] for e in cdp.named("Log.entryAdded") if e["entry"]["level"] == "error"]
    assert not thrown, thrown
    assert not errors, errors


async def test_banner_names_why_dialling_is_held(tmp_path: Path, chromium_log: IO[bytes]) -> None:
    """`dialling_held` as /health reports it (stubbed in the browser: the field comes from another change)."""
    health: dict[str, Any] = {}
    async with daemon_without_pbx(tmp_path) as api, headless_chromium(tmp_path, chromium_log) as cdp:
        await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/health"}]})
        stub = asyncio.create_task(_answer_health(cdp, health))
        try:
            for state, reason, words in (
                ({"connected": True, "dialling_held": "ari_app_replaced"}, "ari_app_replaced",
                 "another client took over dialerd's ARI application"),
                ({"connected": True, "dialling_held": None}, "", None),
                ({"connected": False, "dialling_held": "pbx_down"}, "pbx_down", "the PBX is unreachable"),
                ({"connected": True, "dialling_held": "maintenance_window"}, "maintenance_window",
                 "Dialling is held (maintenance window)"),
                ({"connected": True}, "", None),  # a daemon without the field: connected says enough
            ):
                health.clear()
                health.update({"status": "ok", "pbx": {"driver": "ari", **state}})
                await cdp.send("Page.navigate", {"url": f"{api.base}/dashboard"})
                await cdp.wait_for(
                    f"(b => !!b && document.readyState === 'complete' && b.hidden === {json.dumps(words is None)}"
                    f" && b.dataset.reason === {json.dumps(reason)} && Number(b.dataset.reports) >= 1)"
                    "(document.querySelector('[data-testid=held-banner]'))", f"the banner for {state}")
                if words is not None:
                    text = await cdp.js("document.querySelector('[data-testid=held-banner]').textContent")
                    assert words in text, text
        finally:
            stub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stub
        thrown = cdp.named("Runtime.exceptionThrown")
    assert not thrown, thrown


async def _answer_health(cdp: Cdp, health: dict[str, Any]) -> None:
    """Answers every /health request the page makes with ``health``."""
    await _stub(cdp, {"/health": lambda: ("application/json", json.dumps(health))})


async def _stub(cdp: Cdp, routes: dict[str, Any]) -> None:
    """Answers each request paused by Fetch.enable with the route whose path ends its URL (Fetch.requestPaused)."""
    done = 0
    while True:
        paused = cdp.named("Fetch.requestPaused")
        for event in paused[done:]:
            path = event["request"]["url"].split("?", 1)[0]
            content_type, text = next(answer for end, answer in routes.items() if path.endswith(end))()
            await cdp.send("Fetch.fulfillRequest", {
                "requestId": event["requestId"], "responseCode": 200, "body": base64.b64encode(text.encode()).decode(),
                "responseHeaders": [{"name": "Content-Type", "value": content_type}]})
        done = len(paused)
        await asyncio.sleep(0.02)


async def test_banner_from_the_snapshot(tmp_path: Path, chromium_log: IO[bytes]) -> None:
    """A stream snapshot's `dialling_held` (stubbed in the browser) raises the banner though /health is fine."""
    async with daemon_without_pbx(tmp_path) as api, headless_chromium(tmp_path, chromium_log) as cdp:
        status, body = await api.create(numbers([0]), name="Held here")
        assert status == 201, body
        snapshot = {"type": "snapshot", "campaign_id": body["id"], "status": "running",
                    "contacts": {**body["contacts"]}, "calls_in_flight": 0, "calls_per_minute": 0,
                    "answer_rate": 0.0, "avg_talk_seconds": 0.0, "pbx_connected": True,
                    "dialling_held": "ari_app_replaced", "at": "2030-01-01T00:00:00.000Z"}
        health = {"status": "ok", "pbx": {"driver": "ari", "connected": True, "dialling_held": None}}
        await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/health"}, {"urlPattern": "*/events"}]})
        stub = asyncio.create_task(_stub(cdp, {
            "/health": lambda: ("application/json", json.dumps(health)),
            "/events": lambda: ("text/event-stream", f"retry: 2000\nid: 0\n\nid: 0\ndata: {json.dumps(snapshot)}\n\n"),
        }))
        try:
            await cdp.send("Page.navigate", {"url": f"{api.base}/dashboard"})
            await cdp.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden",
                               "the key form")
            await type_key(cdp, api.keys["acme"])
            await cdp.wait_for("(b => b.hidden && Number(b.dataset.reports) >= 1)"
                               "(document.querySelector('[data-testid=held-banner]'))", "no banner while /health is fine")
            await open_campaign(cdp, body["id"], "Held here")
            await cdp.wait_for("document.querySelector('[data-testid=figures]').dataset.source === 'snapshot'"
                               " && (b => !b.hidden && b.dataset.reason === 'ari_app_replaced')"
                               "(document.querySelector('[data-testid=held-banner]'))", "the banner from the snapshot")
            text = await cdp.js("document.querySelector('[data-testid=held-banner]').textContent")
            assert "another client took over dialerd's ARI application" in text, text
        finally:
            stub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stub
        thrown = cdp.named("Runtime.exceptionThrown")
    assert not thrown, thrown
