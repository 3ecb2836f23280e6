"""Webhooks survive kill -9: dialerd as a subprocess dialling through the real local Asterisk, a signed
webhook receiver on loopback, the daemon SIGKILLed twice mid-campaign and restarted; at the end every event
of the campaign has reached the receiver (at least once, duplicates only around the kills), every
signature verifies, and the first arrivals are in event-id order."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dialerd.domain.webhooks import verify
from tests.daemon_proc import DaemonProc, create_key, daemon_env, multipart
from tests.live import numbers

pytestmark = pytest.mark.timeout(300)

SECRET = "crash-test-secret-" + "9" * 20


class Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[int] = []
        self.bad = 0


def serve(received: Received) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = verify(SECRET, self.headers.get("Dialerd-Signature", ""), body, int(time.time()))
            with received.lock:
                received.ids.append(int(self.headers["Dialerd-Event-Id"]))
                received.bad += 0 if ok and json.loads(body)["id"] == received.ids[-1] else 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_kill_9_mid_campaign_loses_no_webhook_event(tmp_path: Path) -> None:
    received = Received()
    server = serve(received)
    db = tmp_path / "wh.db"
    env = daemon_env(f"sqlite+aiosqlite:///{db}", app=f"dialerd-whcrash-{time.time_ns() % 10**6}",
                     DIALERD_WEBHOOKS_ALLOW_PRIVATE="true")
    key = create_key(env, "acme", concurrent_max=6, cpm=120)
    daemon = DaemonProc(env, tmp_path / "dialerd.log")
    daemon.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        # Answered calls (01..08: the far end hangs up after a few seconds) and busy ones (41, 42).
        body, ctype = multipart({"name": "webhook crash", "max_concurrent_calls": "6", "ring_timeout_seconds": "5",
                                 "webhook_url": url, "webhook_secret": SECRET},
                                numbers([1, 2, 3, 4, 5, 6, 7, 8, 41, 42] * 3))
        status, campaign = daemon.request("POST", "/api/v1/campaigns", key, body, {"Content-Type": ctype})
        assert status == 201, campaign
        cid = campaign["id"]
        assert daemon.request("POST", f"/api/v1/campaigns/{cid}/start", key)[0] == 200
        for kills in range(2):  # kill -9 twice, each once more events have arrived
            want = len(received.ids) + 5
            deadline = time.monotonic() + 60
            while len(received.ids) < want:
                assert time.monotonic() < deadline, f"no webhook deliveries before kill {kills + 1}"
                time.sleep(0.02)
            daemon.kill()
            daemon.start()
        deadline = time.monotonic() + 180
        while True:
            _, c = daemon.request("GET", f"/api/v1/campaigns/{cid}", key)
            _, hook = daemon.request("GET", f"/api/v1/campaigns/{cid}/webhook", key)
            if c["status"] == "completed" and hook["pending"] == 0:
                break
            assert time.monotonic() < deadline, (c, hook)
            time.sleep(0.2)
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill()
        server.shutdown()
        server.server_close()
    with sqlite3.connect(db) as conn:
        stored = [r[0] for r in conn.execute("SELECT id FROM event WHERE campaign_id = ? ORDER BY id", (cid,))]
    assert stored and stored[-1] == hook["delivered_through"] and hook["dead"] == 0
    with received.lock:
        got = list(received.ids)
        bad = received.bad
    assert bad == 0
    assert set(got) == set(stored), f"missing: {sorted(set(stored) - set(got))}"  # nothing lost
    first_seen = list(dict.fromkeys(got))
    assert first_seen == stored  # new events arrive in id order; a repeat only re-sends what came before
    assert len(got) - len(stored) <= 2 * 200  # duplicates: at most what two kills left unconfirmed
