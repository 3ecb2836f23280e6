"""Which webhook targets are refused, as effects: resolving names (domain/webhooks.py has the rules).

Unless ``[webhooks] allow_private``, a target whose host is, or resolves to, a loopback, link-local, private
or reserved address is refused: at create and PATCH (``check_target``: 400 naming the field), and at every
resolution before a delivery (``GuardedResolver``, the delivery session's resolver), so a name re-pointed at
an internal address later is refused too.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from dialerd.domain.webhooks import ERROR_MAX, WebhookUrl, address_refused
from dialerd.errors import InvalidInput


class RefusedAddress(OSError):
    """A webhook target resolved to an address that is refused (aiohttp reports it as a connection error)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing every name that resolves to a refused address (``address_refused``)."""

    def __init__(self, allow_private: bool) -> None:
        self.inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not self.allow_private:
            for entry in found:
                why = address_refused(entry["host"])
                if why is not None:
                    raise RefusedAddress(f"{host} resolves to {entry['host']}, {why} ([webhooks] allow_private "
                                         "is off)")
        return found

    async def close(self) -> None:
        await self.inner.close()


async def check_target(raw: str, *, allow_private: bool, field: str = "webhook_url") -> None:
    """Refuse (400 naming ``field``) a URL whose host is, or resolves to, a refused address, or does not
    resolve at all; nothing is sent to it."""
    url = WebhookUrl.parse(raw)
    if allow_private:
        return
    literal = url.literal_ip
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM), 10.0)
        except (OSError, TimeoutError) as exc:
            raise _refused(field, f"the host {url.host} does not resolve ({exc.__class__.__name__}: "
                           f"{exc})"[:ERROR_MAX]) from None
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        why = address_refused(address)
        if why is not None:
            shown = url.host if literal is not None else f"{url.host} ({address})"
            raise _refused(field, f"{shown} is {why}; webhooks to loopback, link-local and private "
                           "addresses are refused unless the daemon's [webhooks] allow_private is set")


def _refused(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", error_id="invalid_field", field=field)
