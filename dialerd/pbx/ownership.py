"""Who holds an ARI application name: the rules, kept apart from the HTTP calls that gather the facts.

Measured on Asterisk 22.10 (``tests/integration/test_app_takeover.py``):

- One websocket per app name. A second ``/ari/events?app=X`` takes the app: the first websocket gets
  ``ApplicationReplaced`` and then stays open, silent. It never gets the app back by itself.
- ``GET /ari/applications/X`` lists an app while a client holds it, and also after the client left
  while channels it originated are still subscribed ("inactive"). ARI has no field telling the two
  apart. An inactive app whose channels all ended stays listed, with empty lists, until Asterisk's lazy
  clean-up runs (on any app registering or unregistering).
- A call answered while the app has no live client is hung up at once ("Stasis app 'X' doesn't
  exist" / "not active"); its hangup record reads cause 0, state Up.

So a daemon about to connect decides from: the app listing after forcing the clean-up (register and
drop a throw-away app), and the owner record a live dialerd keeps fresh in the Asterisk global variable
``DIALERD_OWNER_<app>`` (``token|host|pid|epoch``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OWNER_REFRESH_S = 5.0  # a live dialerd rewrites its owner record this often
OWNER_FRESH_S = 20.0  # a record older than this is from a dialerd that died


def owner_variable(app: str) -> str:
    return f"DIALERD_OWNER_{app}"


@dataclass(frozen=True)
class Owner:
    """One dialerd's claim on the app, as written to the owner variable."""

    token: str
    host: str
    pid: int
    epoch: float

    def encode(self) -> str:
        return f"{self.token}|{self.host}|{self.pid}|{int(self.epoch)}"

    def describe(self) -> str:
        return f"dialerd pid {self.pid} on {self.host}"


def parse_owner(text: str) -> Owner | None:
    parts = text.strip().split("|")
    if len(parts) != 4 or not parts[0]:
        return None
    try:
        return Owner(parts[0], parts[1], int(parts[2]), float(parts[3]))
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def other_live_owner(
    owner: Owner | None,
    my_token: str,
    now: float,
    *,
    host: str | None = None,
    alive: Callable[[int], bool] = pid_alive,
) -> Owner | None:
    """The other dialerd that holds the app now, if the record says one does.

    A record of ours, a stale one, or one from this host whose process is gone (a crash followed by a
    quick restart) does not count.
    """
    if owner is None or owner.token == my_token or now - owner.epoch > OWNER_FRESH_S:
        return None
    if owner.host == (host or socket.gethostname()) and not alive(owner.pid):
        return None
    return owner


def app_subscriptions(app: Any) -> int:
    """How many channels, bridges and endpoints an ``/applications/{app}`` object lists."""
    if not isinstance(app, dict):
        return 0
    return sum(len(app.get(k) or []) for k in ("channel_ids", "bridge_ids", "endpoint_ids"))


def startup_verdict(app: Any, other: Owner | None) -> str | None:
    """Why dialerd must not connect (one sentence), or None to go ahead.

    ``app``: ``GET /applications/{app}`` after the forced clean-up (None for 404). Listed with no
    subscriptions means a live client holds it (an inactive one would have been cleaned up). Listed
    with subscriptions is either a live client or calls left by a dialerd that stopped: only a fresh
    owner record of another dialerd says it is live; otherwise the calls are ours to reconcile.
    """
    if app is None:
        return None
    name = app.get("name", "?") if isinstance(app, dict) else "?"
    if other is not None:
        return f"ARI app {name!r} is held by another {other.describe()}; refusing to take it over"
    if app_subscriptions(app) == 0:
        return (f"ARI app {name!r} is already registered by a live client (GET /ari/applications/{name}); "
                "refusing to take it over: stop that client or set a different DIALERD_ARI_APP")
    return None
