"""The label of a PBX request in ``dialerd_pbx_requests_total``: the ARI route with its id left out, so the
metric's cardinality is bounded whatever the channel ids."""

from __future__ import annotations

import pytest

from dialerd.pbx.ari_client import route_of


@pytest.mark.parametrize(("path", "route"), [
    ("/channels/dlr-abc-1-1-ff", "/channels/{id}"),
    ("/channels/dlr-abc-1-1-ff/continue", "/channels/{id}/continue"),
    ("/channels/dlr-abc-1-1-ff;2", "/channels/{id}"),
    ("/channels", "/channels"),
    ("/channels/create", "/channels/create"),
    ("/applications/dialerd/eventFilter", "/applications/{id}/eventFilter"),
    ("/asterisk/variable", "/asterisk/variable"),
])
def test_routes_leave_ids_out(path: str, route: str) -> None:
    assert route_of(path) == route
