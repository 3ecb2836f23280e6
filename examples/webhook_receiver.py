#!/usr/bin/env python3
"""A minimal dialerd webhook receiver, standard library only: copy it, then replace ``handle_event``.

    WEBHOOK_SECRET=$(cat secret.txt) python3 webhook_receiver.py --port 8090
    dialerctl update cmp_... --webhook-url http://this-host:8090/dialerd --webhook-secret-file secret.txt

For each POST it checks ``Dialerd-Signature: t=<unix>,v1=<hex>`` (HMAC-SHA256 of ``"<t>.<raw body>"``
keyed by the campaign's webhook_secret), compared in constant time, with ``t`` at most 5 minutes away
from this machine's clock; a bad or stale signature gets 400. Delivery is at least once, so an event
already seen (same ``Dialerd-Event-Id``) is answered 200 again without being handled twice. Any 2xx tells
dialerd the event is delivered; answer within 10 s (queue slow work instead of doing it here).

The set of seen ids lives in memory and is bounded: a real receiver keeps it in its own database, in the
same transaction as the effect of the event. Put TLS in front of it (a reverse proxy) for the internet.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE = 300  # seconds between the signature's t and now
MAX_BODY = 1024 * 1024
SEEN_MAX = 100_000


def verify(secret: str, header: str, body: bytes, now: float | None = None, tolerance: int = TOLERANCE) -> bool:
    """True when ``header`` (Dialerd-Signature) signs ``body`` (the raw bytes, before any JSON parsing)
    with ``secret`` and its timestamp is within ``tolerance`` seconds of ``now``."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


class Seen:
    """The event ids handled already, the oldest forgotten past ``limit``."""

    def __init__(self, limit: int = SEEN_MAX) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, event_id: str) -> bool:
        """True the first time ``event_id`` is added."""
        with self._lock:
            if event_id in self._ids:
                return False
            self._ids[event_id] = None
            if len(self._ids) > self._limit:
                self._ids.popitem(last=False)
            return True


def handle_event(event_id: str, event_type: str, event: Any) -> None:
    """Your code: here, one JSON line per event on stdout."""
    print(json.dumps({"id": event_id, "type": event_type, "event": event}, separators=(",", ":")), flush=True)


def make_handler(secret: str, seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, "Content-Length required")
            if not 0 <= length <= MAX_BODY:
                return self._answer(413, "body too large")
            body = self.rfile.read(length)
            if not verify(secret, self.headers.get("Dialerd-Signature", ""), body):
                return self._answer(400, "bad or stale signature")
            event_id = self.headers.get("Dialerd-Event-Id", "")
            event_type = self.headers.get("Dialerd-Event-Type", "")
            try:
                event = json.loads(body)
            except ValueError:
                return self._answer(400, "body is not JSON")
            if not seen.add(event_id):
                return self._answer(200, "duplicate, already handled")
            handle_event(event_id, event_type, event)
            return self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            print(f"{self.address_string()} {format % args}", file=sys.stderr, flush=True)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Receive dialerd webhooks: verify, dedupe, print.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (0: any free one; default 8090)")
    parser.add_argument("--secret-file", help="read the webhook secret from this file's first line "
                        "(default: $WEBHOOK_SECRET)")
    args = parser.parse_args(argv)
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as file:
            secret = file.readline().rstrip("\r\n")
    else:
        secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret:
        parser.error("no secret: set WEBHOOK_SECRET or give --secret-file")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret, Seen()))
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
