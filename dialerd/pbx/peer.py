"""Another daemon's Asterisk, reached over ARI's REST side only: what a takeover needs to reconcile the calls
a lapsed daemon placed there (``services/takeover.py``). No websocket and no Stasis app: the channels stay
the other daemon's; this only reads what Asterisk knows of each (live, or the hangup handler's record) and
deletes a record once its end is stored, as the daemon's own adapter does (``pbx/ari.py``).

The daemons of one database use the same ARI user and password on every PBX (``[ari] user`` and
``DIALERD_ARI_PASSWORD``): the dialer_node row names a PBX by its URL only, never with a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from dialerd.domain.call import ChannelLookup
from dialerd.pbx import fence
from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.pbx.records import global_name, parse_hangup_record


class PeerUnreachable(PbxError):
    """The other daemon's PBX did not answer (down, or the network): its calls wait for a later pass."""


class AriPeer:
    """One other PBX (``url`` as its daemon's row gives it)."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._base = self.url + "/ari"
        self._auth = aiohttp.BasicAuth(user, password)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auth=self._auth, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, params: Mapping[str, str | int]) -> tuple[int, Any]:
        try:
            async with self._http().request(method, self._base + path, params=dict(params)) as resp:
                body = await resp.json(content_type=None) if resp.content_length != 0 else None
                return resp.status, body
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PeerUnreachable(f"PBX {self.url} did not answer: {exc.__class__.__name__}") from exc

    async def lookup(self, channel_id: str) -> ChannelLookup:
        status, channel = await self._request("GET", f"/channels/{quote(channel_id, safe='')}", {})
        if status == 200 and isinstance(channel, dict):
            return ChannelLookup(channel_id, live=True, answered=channel.get("state") == "Up")
        if status != 404:
            raise PeerUnreachable(f"PBX {self.url} answered HTTP {status} for a channel")
        status, reply = await self._request("GET", "/asterisk/variable", {"variable": global_name(channel_id)})
        if status != 200:
            raise PeerUnreachable(f"PBX {self.url} answered HTTP {status} for a hangup record")
        value = str(reply.get("value") or "") if isinstance(reply, dict) else ""
        return ChannelLookup(channel_id, live=False, ended=parse_hangup_record(channel_id, value))

    async def forget(self, channel_id: str) -> None:
        await self._request("POST", "/asterisk/variable", {"variable": global_name(channel_id)})

    async def fence_out(self, key: str, new_epoch: int) -> None:
        await fence.fence_out(self, key, new_epoch)

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """``fence.AriRequester``: one REST request, its JSON reply; an error status raises PbxRequestError."""
        status, reply = await self._request(method, path, params or {})
        if status >= 300:
            raise PbxRequestError(f"PBX {self.url} answered HTTP {status}", status=status, body=str(reply or ""))
        return reply

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
