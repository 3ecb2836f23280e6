"""dialerd under systemd: the shipped unit file, and the sd_notify protocol as systemd would see it.

The unit is checked with ``systemd-analyze`` (verify, and the offline security review). The daemon runs
as a subprocess with ``NOTIFY_SOCKET`` pointing at a datagram socket bound here, standing in for systemd,
against the real local Asterisk (each run registers its own Stasis app, so other daemons on the shared
PBX keep their events).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dialerd.daemon import SHUTDOWN_MARGIN_SECONDS
from dialerd.settings import SECRET_KEYS, Settings
from tests.pbx_env import local_pbx_env

pytestmark = [pytest.mark.pbx, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "dialerd.service"
SYSUSERS = REPO / "systemd" / "dialerd.sysusers"
ENV_EXAMPLE = REPO / "systemd" / "dialerd.env.example"
VENV_DIALERD = Path(sys.executable).parent / "dialerd"
MAX_EXPOSURE = 4.9  # systemd-analyze security: up to 4.9 is "OK"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
WATCHDOG_USEC = 2_000_000

# Turns on PR_SET_MDWE (Linux >= 6.3), the kernel's own form of MemoryDenyWriteExecute=yes, then runs argv.
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()} (needs Linux >= 6.3)")
os.execv(sys.argv[1], sys.argv[1:])
"""


# Makes the daemon's status task crash half a second after start, then runs ``dialerd serve``.
CRASH_WRAPPER = """
import asyncio, sys
import dialerd.systemd
async def crash(self, *args):
    await asyncio.sleep(0.5)
    raise RuntimeError("injected crash")
dialerd.systemd.SystemdNotifier._report = crash
from dialerd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


# ---- the unit file ---------------------------------------------------------------------------------


def test_unit_file_verifies_cleanly(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists: point a copy at the venv's dialerd script.
    text = UNIT.read_text(encoding="utf-8")
    exec_start = re.compile(r"^ExecStart=\S+/dialerd ", re.MULTILINE)
    assert len(exec_start.findall(text)) == 1, "expected one ExecStart=.../dialerd line"
    assert VENV_DIALERD.is_file(), f"{VENV_DIALERD} missing: pip install -e . into the venv"
    copy = tmp_path / "dialerd.service"
    copy.write_text(exec_start.sub(f"ExecStart={VENV_DIALERD} ", text), encoding="utf-8")

    done = _systemd_analyze("verify", str(copy))

    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    # Unknown keys and bad values are only warnings (exit 0): the output must be empty.
    assert output == "", f"systemd-analyze verify warned:\n{output}"


def test_unit_file_security_exposure_is_ok_or_better() -> None:
    done = _systemd_analyze("security", "--offline=true", str(UNIT))

    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for dialerd\.service: (\d+(?:\.\d+)?) (\w+)", done.stdout)
    assert match, f"no overall exposure line in:\n{done.stdout}\n{done.stderr}"
    score, rating = float(match.group(1)), match.group(2)
    assert score <= MAX_EXPOSURE, f"exposure {score} {rating} is worse than OK (<= {MAX_EXPOSURE}):\n{done.stdout}"


def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_agrees_with_the_settings_and_the_env_template() -> None:
    unit = _unit_settings()
    grace = Settings().shutdown_grace_period
    assert float(unit["TimeoutStopSec"][0]) > grace, "TimeoutStopSec must exceed the default shutdown grace period"
    # ... and the whole shutdown budget (docs/operations.md), with a few seconds for the last stages' floors.
    assert float(unit["TimeoutStopSec"][0]) >= grace + SHUTDOWN_MARGIN_SECONDS + 5, "TimeoutStopSec < shutdown budget"
    assert (
        f"DIALERD_DATABASE_URL=sqlite+aiosqlite:////var/lib/{unit['StateDirectory'][0]}/dialerd.db"
        in unit["Environment"]
    ), unit["Environment"]
    template = {
        line.split("=", 1)[0].lstrip("#")
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if re.match(r"^#?DIALERD_[A-Z_]+=", line)
    }
    known = {f"DIALERD_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert template <= known, f"unknown settings in the env template: {template - known}"
    assert {f"DIALERD_{key.upper()}" for key in SECRET_KEYS} <= template, (
        "a secret is missing from the env template"
    )


def test_sysusers_file_creates_the_user_the_unit_runs_as(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    assert tool, "systemd-sysusers is missing: apt-get install systemd"
    (tmp_path / "etc").mkdir()

    done = subprocess.run(
        [tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    unit = _unit_settings()
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    user = users.get(unit["User"][0])
    assert user is not None, f"sysusers created {sorted(users)}, the unit runs as {unit['User'][0]}"
    assert unit["Group"][0] in groups
    assert user[5] == f"/var/lib/{unit['StateDirectory'][0]}" and user[6].endswith("nologin"), user


# ---- sd_notify -------------------------------------------------------------------------------------


@dataclass
class NotifySocket:
    """The systemd end of NOTIFY_SOCKET: receives datagrams and keeps them with their arrival time."""

    address: str  # as written in NOTIFY_SOCKET ("@name" is abstract)
    sock: socket.socket
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def receive(self, until: float) -> None:
        """Collect datagrams until the monotonic deadline."""
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, value: str, timeout: float) -> float | None:
        """Arrival time of the first message with ``key=value`` (already received or within ``timeout``)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for at, fields in self.messages[seen:]:
                if fields.get(key) == value:
                    return at
            seen = len(self.messages)
            if time.monotonic() >= deadline:
                return None
            self.receive(min(deadline, time.monotonic() + 0.2))

    def values(self, key: str) -> list[str]:
        return [fields[key] for _, fields in self.messages if key in fields]

    def count(self, key: str, value: str, since: float) -> int:
        return sum(1 for at, fields in self.messages if at >= since and fields.get(key) == value)

    def dump(self) -> str:
        return "\n".join(f"{at:.3f} {fields}" for at, fields in self.messages)


@contextlib.contextmanager
def _notify_socket(tmp_path: Path, abstract: bool) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if abstract:
            name = f"dialerd-sd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            sock.bind("\0" + name)
            address = "@" + name
        else:
            address = str(tmp_path / "notify.sock")
            sock.bind(address)
        yield NotifySocket(address, sock)
    finally:
        sock.close()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def _serve(
    tmp_path: Path, notify: NotifySocket, *, command: list[str] | None = None, **extra: str
) -> Iterator[Daemon]:
    """``python -m dialerd serve`` as systemd would start it (NOTIFY_SOCKET, WATCHDOG_USEC); killed if left up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALERD_", "NOTIFY_", "WATCHDOG_"))}
    env.update(local_pbx_env())
    env.update(
        DIALERD_ARI_APP=f"dialerd-sd-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        DIALERD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'dialerd.db'}",
        DIALERD_SERVER_PORT="0",
        DIALERD_SHUTDOWN_GRACE_PERIOD="5",
        NOTIFY_SOCKET=notify.address,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
    )
    env.update(extra)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "dialerd", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process, log)
    try:
        yield daemon
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _stop(daemon: Daemon, notify: NotifySocket) -> None:
    """SIGTERM, then expect STOPPING=1 and a clean exit."""
    daemon.process.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING", "1", STOP_TIMEOUT)
    code = daemon.process.wait(timeout=STOP_TIMEOUT)
    assert stopping is not None, f"no STOPPING=1 after SIGTERM; got:\n{notify.dump()}\nlog:\n{daemon.output()}"
    assert code == 0, f"exit code {code}; log:\n{daemon.output()}"


def test_ready_once_the_pbx_is_up_then_watchdog_then_clean_stop(tmp_path: Path) -> None:
    with _notify_socket(tmp_path, abstract=False) as notify, _serve(tmp_path, notify) as daemon:
        ready = notify.wait_for("READY", "1", READY_TIMEOUT)
        assert ready is not None, (
            f"no READY=1 within {READY_TIMEOUT} s; got:\n{notify.dump()}\nlog:\n{daemon.output()}"
        )
        # The log line is written (and flushed) before the notification leaves, so it is on disk already.
        log = daemon.output()
        assert '"action": "pbx_connected"' in log, f"READY=1 before the PBX connection:\n{log}"
        assert '"action": "migrate"' in log, f"READY=1 before the migrations:\n{log}"
        assert "dialling: 0 calls in flight" in notify.values("STATUS"), notify.dump()

        notify.receive(ready + 3.0)
        pings = notify.count("WATCHDOG", "1", since=ready)
        assert pings >= 2, f"{pings} WATCHDOG=1 in the 3 s after READY (WATCHDOG_USEC=2 s); got:\n{notify.dump()}"

        _stop(daemon, notify)
        assert notify.values("STATUS")[-1].startswith("stopping"), notify.dump()


def test_not_ready_while_the_pbx_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with (
        _notify_socket(tmp_path, abstract=True) as notify,
        _serve(tmp_path, notify, DIALERD_ARI_URL=closed) as daemon,
    ):
        ready = notify.wait_for("READY", "1", 5.0)

        assert ready is None, f"READY=1 with the PBX unreachable; got:\n{notify.dump()}"
        statuses = notify.values("STATUS")
        assert statuses and "waiting for the PBX" in statuses[-1], f"STATUS: {statuses}"
        # Not ready, but alive: the watchdog still pings (systemd arms it only after READY=1 anyway).
        assert len(notify.values("WATCHDOG")) >= 2, notify.dump()
        assert daemon.process.poll() is None, daemon.output()

        _stop(daemon, notify)


def test_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    # The unit sets MemoryDenyWriteExecute=yes; a dependency that needs writable+executable memory (a JIT,
    # old libffi closures) would crash the service only in production. PR_SET_MDWE applies the same rule.
    command = [sys.executable, "-c", MDWE_WRAPPER, sys.executable, "-m", "dialerd", "serve"]
    with _notify_socket(tmp_path, abstract=True) as notify, _serve(tmp_path, notify, command=command) as daemon:
        ready = notify.wait_for("READY", "1", READY_TIMEOUT)
        assert ready is not None, f"no READY=1 under W^X; log:\n{daemon.output()}"
        _stop(daemon, notify)


def test_a_crashed_task_exits_non_zero_so_systemd_restarts_it(tmp_path: Path) -> None:
    # Restart=on-failure only restarts on a non-zero exit: a crash must not look like `systemctl stop`.
    command = [sys.executable, "-c", CRASH_WRAPPER, "serve"]
    with _notify_socket(tmp_path, abstract=True) as notify, _serve(tmp_path, notify, command=command) as daemon:
        stopping = notify.wait_for("STOPPING", "1", READY_TIMEOUT)
        code = daemon.process.wait(timeout=STOP_TIMEOUT)

    assert stopping is not None, f"no STOPPING=1; log:\n{daemon.output()}"
    assert code == 1, f"exit code {code}; log:\n{daemon.output()}"
    assert '"task": "systemd-status"' in daemon.output(), daemon.output()
