"""The client's and dialerctl's side of webhooks without a daemon: update() takes every PATCH field, the
create/update options reach the client's fields, the secret's three sources, and the example receiver's
``verify`` agreeing with the daemon's signature."""

from __future__ import annotations

import importlib.util
import inspect
import io
import time
from pathlib import Path
from types import ModuleType

import pytest

from dialerd import ctl
from dialerd.client import _http, aio, models, sync
from dialerd.domain import webhooks

RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"


def _receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", RECEIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("update", [sync.Campaigns.update, aio.AsyncCampaigns.update])
def test_update_takes_every_editable_field(update: object) -> None:
    params = inspect.signature(update).parameters  # type: ignore[arg-type]
    assert set(params) - {"self", "id"} == set(models.EDITABLE)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None
               for name, p in params.items() if name not in ("self", "id"))


def test_the_webhook_call_reads_its_path() -> None:
    call = _http.webhook_state("cmp_1")
    assert (call.method, call.path) == ("GET", "/api/v1/campaigns/cmp_1/webhook")


def test_create_and_update_options_parse() -> None:
    parser = ctl.build_parser()
    options = ["--amd", "on", "--on-machine", "voicemail:beep", "--webhook-url", "https://h.example.com/x",
               "--webhook-secret", "s" * 32, "--calling-hours", "mon-fri 09:00-20:00", "--timezone", "UTC"]
    for argv in (["campaigns", "create", "c.csv", "--name", "n", *options], ["update", "cmp_1", *options],
                 ["campaigns", "update", "cmp_1", "--name", "m", *options]):
        args = parser.parse_args(argv)
        assert (args.amd, args.on_machine, args.webhook_url) == ("on", "voicemail:beep", "https://h.example.com/x")
        assert ctl.webhook_secret(args) == "s" * 32 and args.calling_hours == "mon-fri 09:00-20:00"
    args = parser.parse_args(["webhook", "cmp_1", "--json"])
    assert args.run is ctl.webhook and args.json and args.id == "cmp_1"
    with pytest.raises(SystemExit):
        parser.parse_args(["update", "cmp_1", "--webhook-secret", "x" * 20, "--webhook-secret-file", "f"])
    with pytest.raises(SystemExit):
        parser.parse_args(["update", "cmp_1", "--amd", "maybe"])


def test_the_secret_from_a_file_stdin_or_the_value(tmp_path: Path) -> None:
    parser = ctl.build_parser()
    path = tmp_path / "secret"
    path.write_text("from-the-file-0123456789\r\nsecond line\n", encoding="utf-8")
    assert ctl.webhook_secret(parser.parse_args(["update", "i", "--webhook-secret-file", str(path)])) \
        == "from-the-file-0123456789"
    args = parser.parse_args(["update", "i", "--webhook-secret", "-"])
    assert ctl.webhook_secret(args, io.StringIO("from-stdin-0123456789\n")) == "from-stdin-0123456789"
    assert ctl.webhook_secret(parser.parse_args(["update", "i", "--name", "x"])) is None
    with pytest.raises(ctl.UsageError, match="cannot read"):
        ctl.webhook_secret(parser.parse_args(["update", "i", "--webhook-secret-file", str(tmp_path / "none")]))


def test_update_with_nothing_to_change_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any request: the URL goes nowhere.
    assert ctl.main(["--url", "http://127.0.0.1:9", "--api-key", "k", "update", "cmp_1"], io.StringIO()) == 2
    assert "nothing to change" in capsys.readouterr().err


def test_the_example_receiver_verifies_what_the_daemon_signs() -> None:
    receiver = _receiver()
    secret, body, now = "k" * 32, b'{"id": 1}', int(time.time())
    header = webhooks.signature(secret, now, body)
    assert receiver.verify(secret, header, body) and webhooks.verify(secret, header, body, now)
    for t, key, sent in ((now, "x" * 32, body), (now, secret, body + b"\n"), (now - 301, secret, body),
                         (now + 301, secret, body)):
        bad = webhooks.signature(key, t, body)
        assert not receiver.verify(secret, bad, sent, now) and not webhooks.verify(secret, bad, sent, now)
    assert receiver.verify(secret, webhooks.signature(secret, now - 299, body), body, now)
    for header in ("", "t=x,v1=00", f"t={now}", "v1=" + "0" * 64):
        assert not receiver.verify(secret, header, body, now)
    seen = receiver.Seen(limit=2)
    assert [seen.add(i) for i in ("1", "1", "2", "3", "1")] == [True, False, True, True, True]
