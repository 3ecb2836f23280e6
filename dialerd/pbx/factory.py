"""Build a PBX adapter by driver name (the composition root passes settings in)."""

from __future__ import annotations

from typing import Any

from dialerd.ports import Pbx

DRIVERS = ("ari", "ami", "fake")


def build_pbx(driver: str, **kwargs: Any) -> Pbx:
    """``ari``: AriPbx(url, user, password, app, ...); ``ami``: AmiPbx(host, port, user, secret, ...);
    ``fake``: FakePbx(...). Imports lazily so a fake-only test never loads aiohttp or panoramisk."""
    if driver == "ari":
        from dialerd.pbx.ari import AriPbx

        return AriPbx(**kwargs)
    if driver == "ami":
        from dialerd.pbx.ami import AmiPbx

        return AmiPbx(**kwargs)
    if driver == "fake":
        from dialerd.pbx.fake import FakePbx

        return FakePbx(**kwargs)
    raise ValueError(f"unknown PBX driver {driver!r}; expected one of {', '.join(DRIVERS)}")
