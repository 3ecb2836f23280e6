"""Webhooks as pure decisions: which target URLs are acceptable, which addresses are refused, how a
delivery is signed, how long to wait before the next try and when an event is given up (dead).

The effects (resolving names, POSTing, the outbox cursor) are in ``services/webhooks.py`` and
``store/webhooks.py``. The outbox is the ``event`` table itself: every state change already appends its
event there in the same transaction (store/base.py), so an event that exists is an event to deliver; each
campaign's delivery state keeps how far its webhook got (``delivered_through``).

Several daemons on one database: one of them at a time holds a campaign's lease (``lease_*`` below) and
only the holder delivers; the others leave the campaign alone until the lease lapses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

URL_MAX = 2000
SECRET_MIN = 16
SECRET_MAX = 200
TIMEOUT_SECONDS = 10.0  # the contract: a receiver has 10 s to answer
FIRST_DELAY = 1.0  # seconds before the first retry; doubling from there ...
MAX_DELAY = 600.0  # ... up to 10 min
JITTER = 0.2  # each delay is drawn from [1 - JITTER, 1 + JITTER] times its base (then capped)
RETRY_FOR_SECONDS = 24 * 3600  # an event failing for this long is dead
ERROR_MAX = 300  # the length of last_error kept
LEASE_SECONDS = 10.0  # how long a lease holds without being renewed ([webhooks] lease_seconds)

EVENT_ID_HEADER = "Dialerd-Event-Id"
EVENT_TYPE_HEADER = "Dialerd-Event-Type"
SIGNATURE_HEADER = "Dialerd-Signature"


@dataclass(frozen=True)
class WebhookUrl:
    """A syntactically acceptable target: http(s), a host, no credentials, no fragment."""

    text: str
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, raw: str) -> WebhookUrl:
        """Raise ValueError naming what is wrong with ``raw`` as a webhook target."""
        text = raw.strip()
        if len(text) > URL_MAX:
            raise ValueError(f"at most {URL_MAX} characters")
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            raise ValueError("must not contain spaces or control characters")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@); the webhook_secret signs each "
                             "request instead")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        return cls(text, scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80))

    @property
    def literal_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return None


@dataclass(frozen=True)
class DeliveryState:
    """How far a campaign's webhook got: the cursor, the backlog after it and the state of its head event."""

    delivered_through: int
    pending: int
    dead: int
    head_failures: int
    head_failed_since: datetime | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None


def check_secret(raw: str) -> str:
    """The secret as given; ValueError if it is too short, too long or holds control characters."""
    if len(raw) < SECRET_MIN:
        raise ValueError(f"at least {SECRET_MIN} characters (e.g. the output of `openssl rand -hex 32`)")
    if len(raw) > SECRET_MAX:
        raise ValueError(f"at most {SECRET_MAX} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ValueError("must not contain control characters")
    return raw


def address_refused(address: str) -> str | None:
    """Why delivering to ``address`` (an IP) is refused unless private targets are allowed, else None:
    loopback, link-local, private (RFC 1918, unique-local, CGNAT), unspecified, multicast or reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Dialerd-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver checks (examples/webhook_receiver.py): the signature matches and is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance:
        return False
    expected = signature(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def retry_delay(failures: int, rand: float) -> float:
    """Seconds to wait after the ``failures``-th failed try of an event (1, 2, 4 ... 600), with jitter;
    ``rand`` is a uniform draw in [0, 1)."""
    base = min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(0, min(failures - 1, 30)))
    return min(MAX_DELAY, base * (1.0 - JITTER + 2 * JITTER * rand))


def is_dead(first_failed_at: datetime, now: datetime, retry_for: float = RETRY_FOR_SECONDS) -> bool:
    """An event that has been failing since ``first_failed_at`` is given up once ``retry_for`` has passed."""
    return now - first_failed_at >= timedelta(seconds=retry_for)


def delivered(status: int) -> bool:
    """Any 2xx answer delivers the event; every other status is retried (redirects are not followed)."""
    return 200 <= status < 300


# ---- the lease on a campaign's delivery ----------------------------------------------------------------
# ``renewed`` is the daemon's own monotonic time at which it *sent* its last successful take or renewal: the
# database moved the lease's end to at least ``renewed + lease``, so judging from ``renewed`` errs on the
# early side, whatever the database's clock says.


def lease_tick(lease: float) -> float:
    """Seconds between two turns of the lease keeper: renew the leases held, look for work left elsewhere."""
    return lease / 3


def lease_renewal_due(renewed: float, now: float, lease: float) -> bool:
    """The keeper renews a held lease last renewed a sixth of the lease ago or more (at its tick of a third,
    a lease is then never older than half its length, however the ticks fall)."""
    return now - renewed >= lease / 6


def lease_fresh(renewed: float, now: float, lease: float) -> bool:
    """Whether a POST may go out on this lease without renewing it first: renewed within two thirds of its
    length. Older means the daemon (or its keeper) stalled; the lease may have lapsed and been taken."""
    return now - renewed < 2 * lease / 3
