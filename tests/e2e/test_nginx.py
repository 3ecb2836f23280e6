"""dialerd behind Debian's nginx, with the configuration docs/operations.md gives (config/nginx-dialerd.conf).

Each test runs its own nginx (``nginx -p <tmp_path>``: its own configuration, pid file, logs and temp
directories, loopback ports; not the system service) in front of its own daemon, and goes through it: a
9 MB contacts upload, the live event stream of a campaign on the local Asterisk, and the dashboard in
headless Chromium. The configuration is the documented file itself; only its two addresses change.

``nginx`` comes from Debian (``.ci/setup`` installs it); without it the test fails, it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialerd.api.forms import FORM_OVERHEAD
from dialerd.settings import Settings
from tests.conftest import Api, OfflinePbx, free_port, make_key, start_daemon, test_settings
from tests.e2e.test_dashboard import click, headless_chromium, type_key
from tests.live import live_api, numbers, read_sse, wait_status

pytestmark = pytest.mark.timeout(150)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "config" / "nginx-dialerd.conf"
DOC = REPO / "docs" / "operations.md"
NGINX = Path("/usr/sbin/nginx")
UPSTREAM_LINE = "    server 127.0.0.1:8080;"
LISTEN_LINE = "    listen 80;"


def documented_config() -> str:
    """config/nginx-dialerd.conf, which docs/operations.md must show verbatim as its nginx block."""
    conf = CONF.read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), flags=re.S)
    assert conf in blocks, f"docs/operations.md must hold {CONF.name} verbatim in a ```nginx block"
    return conf


def for_test(conf: str, listen_port: int, upstream_port: int) -> str:
    """The documented file with its two addresses pointed at this test's ports, and nothing else changed."""
    out = []
    for line in conf.splitlines(keepends=True):
        code = line.split("#", 1)[0].rstrip()
        if code == UPSTREAM_LINE:
            line = line.replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
        elif code == LISTEN_LINE:
            line = line.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
        out.append(line)
    changed = [a for a, b in zip(conf.splitlines(), "".join(out).splitlines(), strict=True) if a != b]
    assert len(changed) == 2, f"expected to change the upstream and the listen line, changed {changed}"
    return "".join(out)


def directive(conf: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", conf, flags=re.M)


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|)", value.strip()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def megabytes(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value.strip()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()] / 1024**2


def test_documented_settings_fit_dialerd() -> None:
    """The numbers in the file against dialerd's defaults: upload limit, heartbeat, long imports."""
    conf = documented_config()
    defaults = Settings()
    # Above the upload limit plus the form's framing, so dialerd answers an oversized file itself.
    (body,) = directive(conf, "client_max_body_size")
    assert megabytes(body) * 1024**2 >= defaults.upload_limit_bytes + FORM_OVERHEAD
    # Long imports: a request may take minutes to be answered; a slow client minutes to send.
    assert {seconds(v) for v in directive(conf, "proxy_read_timeout")} >= {300.0}
    assert seconds(directive(conf, "proxy_send_timeout")[0]) >= 300
    assert seconds(directive(conf, "client_body_timeout")[0]) >= 60
    # The event stream: unbuffered over HTTP/1.1 with keepalive, and its read timeout far above the heartbeat.
    events = conf.split("location ~ ^/api/v1/campaigns/[^/]+/events$", 1)[1]
    assert directive(events, "proxy_buffering") == ["off"] and directive(events, "gzip") == ["off"]
    assert min(seconds(v) for v in directive(events, "proxy_read_timeout")) >= 4 * defaults.sse_heartbeat_interval
    assert directive(conf, "proxy_http_version") == ["1.1"]
    assert directive(conf, "proxy_set_header")[0] == 'Connection ""'


def nginx_command(prefix: Path, port: int, upstream_port: int) -> list[str]:
    """Writes an nginx.conf around the documented server block into ``prefix``; returns the command line."""
    assert NGINX.exists(), "needs Debian's nginx: .ci/setup installs it (apt-get install nginx)"
    for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "dialerd.conf").write_text(for_test(documented_config(), port, upstream_port))
    # As root, nginx's workers would run as nobody, who cannot enter pytest's 0700 tmp_path.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix}/logs/access.log;\n"
        f"    client_body_temp_path {prefix}/client_body;\n    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n    uwsgi_temp_path {prefix}/uwsgi;\n"
        f"    scgi_temp_path {prefix}/scgi;\n"
        # Compression on for what dialerd serves, text/event-stream included: the events location must
        # turn it off.
        "    gzip on;\n    gzip_types text/plain text/css application/json text/javascript text/event-stream;\n"
        f"    include {prefix}/dialerd.conf;\n"
        "}\n"
    )
    return [str(NGINX), "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", str(prefix / "nginx.conf")]


@contextlib.asynccontextmanager
async def nginx_in_front_of(tmp_path: Path, upstream_port: int) -> AsyncIterator[str]:
    """Debian's nginx with the documented server block, on a free loopback port; yields its base URL."""
    prefix = tmp_path / "nginx"
    port = free_port()
    cmd = nginx_command(prefix, port, upstream_port)
    check = await asyncio.create_subprocess_exec(*cmd, "-t", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.STDOUT)
    out, _ = await check.communicate()
    assert check.returncode == 0, out.decode()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession() as session:
            while True:
                assert proc.returncode is None, f"nginx exited {proc.returncode}; see {prefix}/logs/error.log"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/health") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, f"nginx did not answer on {base}; see {prefix}/logs/error.log"
                await asyncio.sleep(0.05)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def big_csv(target_bytes: int) -> tuple[bytes, int]:
    """Distinct valid US numbers with a wide notes column, up to about ``target_bytes``."""
    note = "n" * 400
    rows = ["phone_number,first_name,notes\n"]
    size = len(rows[0])
    i = 0
    while size < target_bytes:
        row = f"+1{212 + i // 10_000}555{i % 10_000:04d},Name {i},{note}\n"
        rows.append(row)
        size += len(row)
        i += 1
    return "".join(rows).encode(), i


async def test_upload_of_9_mb_through_nginx(tmp_path: Path) -> None:
    daemon = await start_daemon(test_settings(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"), OfflinePbx())
    try:
        key = await make_key(daemon, "acme")
        async with nginx_in_front_of(tmp_path, daemon.port) as base, aiohttp.ClientSession() as session:
            api = Api(base, session, {"acme": key}, daemon)
            csv, rows = big_csv(9 * 1024 * 1024)
            assert len(csv) >= 9 * 1024 * 1024
            # A file object: aiohttp warns (an error here) that a big bytes body blocks the loop while it is copied.
            status, body = await api.create(io.BytesIO(csv), name="nine megabytes")  # type: ignore[arg-type]
            assert status == 201, body
            assert body["contacts"]["total"] == rows and body["import"]["contacts"] == rows, body["import"]
            assert body["import"]["rows_rejected"] == 0 and body["import"]["duplicates"] == 0, body["import"]
            status, listed = await api.call("GET", f"/api/v1/campaigns/{body['id']}/contacts?limit=1&offset={rows - 1}")
            assert status == 200 and listed["contacts"][0]["custom_fields"]["first_name"] == f"Name {rows - 1}"
            # Over dialerd's limit but within nginx's: dialerd's own JSON 413 comes back through nginx.
            too_big, _ = big_csv(daemon.settings.upload_limit_bytes + 256 * 1024)
            nginx_limit = megabytes(directive(documented_config(), "client_max_body_size")[0]) * 1024**2
            assert daemon.settings.upload_limit_bytes < len(too_big) < nginx_limit - FORM_OVERHEAD
            status, body = await api.create(io.BytesIO(too_big), name="too big")  # type: ignore[arg-type]
            assert status == 413 and body["error_id"] == "payload_too_large", body
    finally:
        await daemon.stop()


async def test_live_events_through_nginx(tmp_path: Path) -> None:
    # Three calls that stay up ~20 s keep the campaign running long after the first events.
    async with live_api(tmp_path) as direct, nginx_in_front_of(tmp_path, direct.daemon.port) as base:
        proxied = Api(base, direct.session, direct.keys, direct.daemon)
        status, body = await proxied.create(numbers([30, 31, 32, 0, 40, 1]), name="through nginx",
                                            max_concurrent_calls=3)
        assert status == 201, body
        cid = body["id"]
        # Live from now (no Last-Event-ID), through nginx, while the campaign is started.
        received: list[tuple[float, Any]] = []
        first = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            headers = {**proxied.auth(), "Accept": "text/event-stream"}
            async with proxied.session.get(f"{base}/api/v1/campaigns/{cid}/events", headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=120)) as resp:
                assert resp.status == 200 and resp.content_type == "text/event-stream"
                assert "Content-Encoding" not in resp.headers
                event = None
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[len("event: "):]
                    elif line.startswith("data: ") and event is not None:
                        received.append((time.monotonic(), (event, json.loads(line[len("data: "):]))))
                        if event == "originated" and not first.done():
                            # What dialerd says at the moment the first call's event got through nginx.
                            first.set_result(await direct.call("GET", f"/api/v1/campaigns/{cid}"))
                        if event == "end":
                            return
                    elif line == "":
                        event = None

        reader = asyncio.create_task(follow())
        try:
            # The stream is open before the start (a live stream misses what happened before it).
            await wait_subscribed(direct, 1)
            status, body = await proxied.call("POST", f"/api/v1/campaigns/{cid}/start")
            assert status == 200 and body["status"] == "running", body
            got_status, at_first = await asyncio.wait_for(first, 20)
            assert got_status == 200
            # Not buffered: the first call's event came through while the campaign was running with
            # calls up (the long ones stay up ~20 s).
            assert at_first["status"] == "running" and at_first["calls_in_flight"] >= 1, at_first
            await asyncio.wait_for(reader, 90)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        final = await wait_status(direct, cid, "completed", timeout=10)
        # A replay through nginx is the replay from dialerd itself, event for event.
        replay_proxied = await read_sse_from(base, direct, cid)
        replay_direct = await read_sse_from(direct.base, direct, cid)

    kinds = [kind for _, (kind, _) in received]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert kinds.count("originated") == 6 and "connected" in kinds and "failed" in kinds
    # Events spread over the campaign's ~20 s as they happened, not delivered in one burst at the end.
    times = [t for t, (kind, _) in received]
    assert times[-1] - times[0] >= 10, kinds
    assert final["contacts"]["completed"] == 5 and final["contacts"]["failed"] == 1
    assert replay_proxied == replay_direct
    assert [e[0] for e in replay_proxied].count("originated") == 6


async def wait_subscribed(api: Api, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while api.daemon.hub.subscriber_count() < n:
        assert time.monotonic() < deadline, "the stream through nginx never subscribed"
        await asyncio.sleep(0.02)


async def read_sse_from(base: str, api: Api, cid: str) -> list[Any]:
    events = await read_sse(Api(base, api.session, api.keys, api.daemon), cid, last_event_id="0", max_seconds=20)
    return [(e.event, e.id, e.data) for e in events if e.comment is None]


async def test_dashboard_through_nginx(tmp_path: Path) -> None:
    async with live_api(tmp_path, sse_snapshot_interval=1.0) as direct, \
            nginx_in_front_of(tmp_path, direct.daemon.port) as base:
        status, body = await direct.create(numbers([30, 0, 1]), name="dashboard via nginx")
        assert status == 201, body
        cid = body["id"]
        log = (tmp_path / "chromium.log").open("wb")
        try:
            async with headless_chromium(tmp_path, log) as cdp:
                await cdp.send("Page.navigate", {"url": f"{base}/dashboard"})
                await cdp.wait_for("document.readyState === 'complete'"
                                   " && !document.getElementById('login').hidden", "the key form")
                await type_key(cdp, direct.keys["acme"])
                row = f"[data-testid=campaign-row][data-campaign-id={json.dumps(cid)}]"
                await cdp.wait_for(f"!!document.querySelector({json.dumps(row)})", "the campaign in the list")
                await click(cdp, f"{row} button")
                await cdp.wait_for("document.querySelector('[data-testid=stream-state]').dataset.state"
                                   " === 'live'", "the stream live through nginx")
                await click(cdp, "[data-testid=action-start]")
                # Snapshots and transitions arrive live through nginx while the long call is up.
                await cdp.wait_for(
                    "document.querySelector('[data-testid=detail-status]').textContent === 'running'"
                    " && Number(document.querySelector('[data-testid=count-completed]').textContent) >= 1"
                    " && Number(document.getElementById('chart').dataset.points) >= 2",
                    "live figures through nginx", timeout=30)
                assert (await direct.call("GET", f"/api/v1/campaigns/{cid}"))[1]["status"] == "running"
                await cdp.wait_for("document.querySelector('[data-testid=detail-status]').textContent"
                                   " === 'completed'", "the campaign completed", timeout=60)
                thrown = cdp.named("Runtime.exceptionThrown")
                errors = [e["entry"] for e in cdp.named("Log.entryAdded") if e["entry"]["level"] == "error"]
                urls = {r["request"]["url"] for r in cdp.named("Network.requestWillBeSent")}
        finally:
            log.close()
    assert not thrown, thrown
    assert not errors, errors
    # Everything the page loaded came through nginx.
    assert urls and all(u.startswith(base) or u.startswith("data:") for u in urls), urls
