"""One task owner, one crash policy, a staged shutdown that cannot hang or go silent (issue 10 item 5).

The crash and the normal order are proven on dialerd as a real subprocess against the real Asterisk
(tests/daemon_proc.py): the ``recover_crash`` failpoint (dialerd/faults.py) raises inside the critical
``recover`` task once the PBX is up. A stage that raises or hangs is shown on the in-process daemon with
the fake PBX, its boxes shortened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dialerd import daemon as daemon_mod
from dialerd.daemon import Daemon
from tests.conftest import test_settings
from tests.daemon_proc import DaemonProc, daemon_env

STAGES = ["stop_originating", "follow_calls", "close_sse", "stop_webhooks", "stop_http", "close_pbx", "close_database"]


def _records(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _stage_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("action") == "shutdown_stage"]


def _proc(tmp_path: Path, **extra: str) -> DaemonProc:
    env = daemon_env(f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}", f"dialerd-to-{uuid.uuid4().hex[:8]}",
                     DIALERD_SHUTDOWN_GRACE_PERIOD="5", **extra)
    return DaemonProc(env, tmp_path / "dialerd.log")


def _wait_exit(proc: DaemonProc, timeout: float) -> int:
    assert proc.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.proc.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"dialerd did not exit within {timeout} s; see {proc.log_path}")


@pytest.mark.pbx
@pytest.mark.timeout(90)
def test_a_crashing_critical_task_stops_the_daemon_non_zero_and_names_the_task(tmp_path: Path) -> None:
    proc = _proc(tmp_path, DIALERD_FAILPOINTS="recover_crash")
    try:
        proc.start(wait_pbx=False)  # it may be gone before /health answers
        code = _wait_exit(proc, 60.0)
    finally:
        proc.kill()
    records = _records(proc.log_path)
    text = proc.log_path.read_text(encoding="utf-8", errors="replace")

    assert code == 1, f"exit code {code} (EXIT_CRASHED is 1); log:\n{text}"
    crashes = [r for r in records if r.get("action") == "task_crash"]
    assert [(r["task"], r["critical"], r["level"]) for r in crashes] == [("recover", True, "critical")], text
    assert "FailpointError: failpoint recover_crash hit" in crashes[0]["exc"]
    # The crash took the ordinary way out: every stage ran, in order, and the database was closed.
    assert [r["stage"] for r in _stage_records(records)] == STAGES, text
    assert all(r["ok"] for r in _stage_records(records)), text
    assert any(r.get("action") == "stopped" for r in records), text


@pytest.mark.pbx
@pytest.mark.timeout(90)
def test_sigterm_runs_the_named_stages_in_order_each_logged_with_its_duration(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    try:
        proc.start()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        code = _wait_exit(proc, 60.0)
    finally:
        proc.kill()
    records = _records(proc.log_path)
    text = proc.log_path.read_text(encoding="utf-8", errors="replace")

    assert code == 0, f"exit code {code}; log:\n{text}"
    stages = _stage_records(records)
    assert [r["stage"] for r in stages] == STAGES, text
    assert all(r["ok"] is True and isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in stages), text
    assert not [r for r in records if r.get("action") == "task_crash"], text
    budget = next(r["budget_seconds"] for r in records if r.get("action") == "shutdown")
    assert budget == 5 + daemon_mod.SHUTDOWN_MARGIN_SECONDS  # the grace period + the fixed margin


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failure", ["raises", "hangs"])
async def test_a_failing_stage_is_logged_and_the_later_stages_still_run(
    tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="dialerd.shutdown")
    monkeypatch.setattr(daemon_mod, "CLOSE_PBX_SECONDS", 0.3)  # the hung stage's box, shortened
    daemon = await Daemon.build(test_settings(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", pbx_driver="fake",
                                              shutdown_grace_period=1.0))
    await daemon.start()
    hung = asyncio.Event()

    async def broken_close() -> None:
        if failure == "raises":
            raise ConnectionResetError("the PBX connection broke while closing")
        hung.set()
        await asyncio.Event().wait()  # never returns

    monkeypatch.setattr(daemon.pbx, "close", broken_close)
    closed: list[str] = []
    real_close = daemon.store.close

    async def recorded_close() -> None:
        closed.append("store")
        await real_close()

    monkeypatch.setattr(daemon.store, "close", recorded_close)

    results = await daemon.stop()

    assert [r.name for r in results] == STAGES
    assert {r.name: r.ok for r in results} == {name: name != "close_pbx" for name in STAGES}
    close_pbx = next(r for r in results if r.name == "close_pbx")
    assert close_pbx.error is not None
    if failure == "hangs":
        assert hung.is_set() and "timed out" in close_pbx.error and close_pbx.seconds < 5.0
    else:
        assert close_pbx.error == "ConnectionResetError: the PBX connection broke while closing"
    logged = [(getattr(r, "stage", None), getattr(r, "ok", None)) for r in caplog.records
              if getattr(r, "action", None) == "shutdown_stage"]
    assert logged == [(name, name != "close_pbx") for name in STAGES]
    # The last stage did its work although the one before it failed: no task is left and the pool is closed.
    assert daemon.tasks.names() == []
    assert closed == ["store"]
