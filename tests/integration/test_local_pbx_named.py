"""Named local PBXs (`asterisk/local-pbx up --name NAME`) run side by side with the default one.

Two named PBXs, `test-a` and `test-b`, next to the default PBX that every other test uses: distinct ports,
credentials, roots and CDR files; a call on one is in its own CDR and AstDB only; two ARI apps share one
PBX; `down --name` stops only that PBX, and the default one is never restarted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import fcntl
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.pbx_env import LOCAL_PBX, local_pbx_env, parse_exports, pbx_cli

pytestmark = pytest.mark.pbx

NAMES = ("test-a", "test-b")
CDR_UNIQUEID = 16
ANSWERS = "+14155550107"  # 00-29: answered, the far end hangs up after about 2.3 s
# Concurrent sessions of this test would stop each other's test-a/test-b: they take turns.
SESSION_LOCK = Path("/tmp/dialerd-test-local-pbx-named.lock")


def _lp(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LOCAL_PBX), *args], capture_output=True, text=True, timeout=timeout, check=False)


def _up(name: str) -> dict[str, str]:
    proc = _lp("up", "--name", name)
    assert proc.returncode == 0, proc.stderr
    return parse_exports(proc.stdout)


def _pid(env: dict[str, str]) -> int:
    return int((Path(env["DIALERD_PBX_ROOT"]) / "run/asterisk/asterisk.pid").read_text())


def _auth(env: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{env['DIALERD_ARI_USER']}:{env['DIALERD_ARI_PASSWORD']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.contextmanager
def _session_lock(timeout: float = 300.0) -> Iterator[None]:
    with open(SESSION_LOCK, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{SESSION_LOCK} held for {timeout} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def default_pbx() -> dict[str, str]:
    return local_pbx_env()


@pytest.fixture(scope="module")
def pbxs(default_pbx: dict[str, str]) -> Iterator[dict[str, dict[str, str]]]:
    with _session_lock():
        default_pid = _pid(default_pbx)
        try:
            envs = {name: _up(name) for name in NAMES}
            assert _pid(default_pbx) == default_pid, "a named `up` must not restart the default PBX"
            yield envs
        finally:
            for name in NAMES:
                _lp("down", "--name", name, timeout=60)


def _ami_login(env: dict[str, str], user: str, secret: str, hold: socket.socket | None = None) -> tuple[bool, socket.socket]:
    sock = socket.create_connection((env["DIALERD_AMI_HOST"], int(env["DIALERD_AMI_PORT"])), timeout=5)
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, "AMI closed before its banner"
        buf += chunk
    sock.sendall(f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\n\r\n".encode())
    buf = buf.split(b"\r\n", 1)[1]
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return b"Response: Success" in buf.split(b"\r\n\r\n", 1)[0], sock


def test_named_pbxs_are_separate_from_each_other_and_the_default(
    pbxs: dict[str, dict[str, str]], default_pbx: dict[str, str]
) -> None:
    envs = [default_pbx, *pbxs.values()]
    assert all(set(env) == set(default_pbx) for env in envs), "the same variables as the default PBX"
    ports = [int(env[k].rsplit(":", 1)[-1]) for env in envs
             for k in ("DIALERD_ARI_URL", "DIALERD_AMI_PORT", "DIALERD_PBX_SIP_PORT")]
    assert len(set(ports)) == len(ports), ports
    for key in ("DIALERD_PBX_ROOT", "DIALERD_PBX_CDR", "DIALERD_ARI_PASSWORD", "DIALERD_AMI_SECRET"):
        assert len({env[key] for env in envs}) == len(envs), key
    assert len({_pid(env) for env in envs}) == len(envs)
    for name, env in pbxs.items():
        root = Path(env["DIALERD_PBX_ROOT"])
        assert root.parent.name == name
        assert Path(env["DIALERD_PBX_CDR"]).is_relative_to(root)
        assert (root.parent / "state.json").stat().st_mode & 0o077 == 0, "the state file holds secrets: mode 600"
        # the big read-only tree is shared with the default root (hard links), the runtime state is not
        base = Path(default_pbx["DIALERD_PBX_ROOT"])
        assert (root / "usr/sbin/asterisk").samefile(base / "usr/sbin/asterisk")
        for own in ("etc/asterisk/pjsip.conf", "var/lib/asterisk/astdb.sqlite3", "run/asterisk/asterisk.ctl"):
            assert not (root / own).samefile(base / own), own
        again = _up(name)
        assert again == env, "a second `up --name` reuses the running PBX"
        status = _lp("status", "--name", name, timeout=30)
        assert status.returncode == 0 and parse_exports(status.stdout) == env


async def test_each_answers_ari_and_ami_with_its_own_credentials(pbxs: dict[str, dict[str, str]]) -> None:
    a, b = pbxs["test-a"], pbxs["test-b"]
    async with aiohttp.ClientSession() as session:
        for env, other in ((a, b), (b, a)):
            url = env["DIALERD_ARI_URL"] + "/ari/asterisk/info"
            async with session.get(url, headers=_auth(env)) as resp:
                assert resp.status == 200
                assert (await resp.json())["system"]["version"] == env["DIALERD_PBX_ASTERISK_VERSION"]
            async with session.get(url, headers=_auth(other)) as resp:
                assert resp.status == 401, "the other PBX's password is not valid here"
    for env, other in ((a, b), (b, a)):
        ok, sock = _ami_login(env, env["DIALERD_AMI_USER"], env["DIALERD_AMI_SECRET"])
        sock.close()
        assert ok
        ok, sock = _ami_login(env, other["DIALERD_AMI_USER"], other["DIALERD_AMI_SECRET"])
        sock.close()
        assert not ok


async def _call(env: dict[str, str], app: str, number: str) -> tuple[str, dict[str, object]]:
    """Originate into app and wait for the channel's ChannelDestroyed; returns its id and the event."""
    base = env["DIALERD_ARI_URL"]
    cid = f"named-{uuid.uuid4().hex[:12]}"
    async with aiohttp.ClientSession(headers=_auth(env)) as session:
        ws = await session.ws_connect(f"{base}/ari/events", params={"app": app})
        try:
            body = {"endpoint": f"PJSIP/{number}@carrier", "app": app, "channelId": cid, "timeout": 10,
                    "variables": {"CHANNEL(hangup_handler_push)": "dialerd-hh,s,1", "DIALERD_ID": cid}}
            async with session.post(f"{base}/ari/channels", json=body) as resp:
                assert resp.status == 200
            async with asyncio.timeout(20):
                async for msg in ws:
                    event = json.loads(msg.data)
                    if event["type"] == "ChannelDestroyed" and event["channel"]["id"] == cid:
                        return cid, event
        finally:
            await ws.close()
    raise AssertionError(f"no ChannelDestroyed for {cid}")


def _cdr_ids(env: dict[str, str]) -> set[str]:
    path = Path(env["DIALERD_PBX_CDR"])
    if not path.exists():
        return set()
    with path.open(newline="") as fh:
        return {row[CDR_UNIQUEID] for row in csv.reader(fh) if len(row) > CDR_UNIQUEID}


async def test_a_call_is_in_its_own_pbxs_cdr_and_astdb_only(
    pbxs: dict[str, dict[str, str]], default_pbx: dict[str, str]
) -> None:
    a, b = pbxs["test-a"], pbxs["test-b"]
    app = f"named-test-{uuid.uuid4().hex[:6]}"
    (cid_a, ev_a), (cid_b, ev_b) = await asyncio.gather(_call(a, app, ANSWERS), _call(b, app, ANSWERS))
    assert ev_a["cause"] == 16 and ev_b["cause"] == 16
    for _ in range(50):  # the CDR is written as the channel is destroyed
        if cid_a in _cdr_ids(a) and cid_b in _cdr_ids(b):
            break
        await asyncio.sleep(0.1)
    assert cid_a in _cdr_ids(a) and cid_b in _cdr_ids(b)
    assert cid_a not in _cdr_ids(b) | _cdr_ids(default_pbx)
    assert cid_b not in _cdr_ids(a) | _cdr_ids(default_pbx)
    for env, own, other in ((a, cid_a, cid_b), (b, cid_b, cid_a)):
        assert "Value: 16|SIP 200 OK|Up|" in await asyncio.to_thread(pbx_cli, env, f"database get dialerd {own}")
        assert "Value:" not in await asyncio.to_thread(pbx_cli, env, f"database get dialerd {other}")
        await asyncio.to_thread(pbx_cli, env, f"database del dialerd {own}")


async def test_two_ari_apps_and_two_ami_logins_share_one_pbx(pbxs: dict[str, dict[str, str]]) -> None:
    """Two daemons on one PBX: each its own DIALERD_ARI_APP, the same ARI user and AMI user."""
    a = pbxs["test-a"]
    base = a["DIALERD_ARI_URL"]
    apps = [f"named-x-{uuid.uuid4().hex[:6]}", f"named-y-{uuid.uuid4().hex[:6]}"]
    cids = {app: f"named-{uuid.uuid4().hex[:12]}" for app in apps}
    seen: dict[str, set[str]] = {app: set() for app in apps}
    async with aiohttp.ClientSession(headers=_auth(a)) as session:
        sockets = [await session.ws_connect(f"{base}/ari/events", params={"app": app}) for app in apps]

        async def read(app: str, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "StasisStart":
                    seen[app].add(event["channel"]["id"])
                    if event["channel"]["id"] == cids[app]:
                        return

        readers = [asyncio.create_task(read(app, ws)) for app, ws in zip(apps, sockets, strict=True)]
        for app in apps:
            body = {"endpoint": f"PJSIP/{ANSWERS}@carrier", "app": app, "channelId": cids[app], "timeout": 10}
            async with session.post(f"{base}/ari/channels", json=body) as resp:
                assert resp.status == 200
        async with asyncio.timeout(15):
            await asyncio.gather(*readers)
        for ws in sockets:
            await ws.close()
    assert seen == {app: {cids[app]} for app in apps}, "each app gets its own calls' events only"
    ok1, s1 = _ami_login(a, a["DIALERD_AMI_USER"], a["DIALERD_AMI_SECRET"])
    ok2, s2 = _ami_login(a, a["DIALERD_AMI_USER"], a["DIALERD_AMI_SECRET"])
    s1.close()
    s2.close()
    assert ok1 and ok2, "two AMI sessions of one user at once"


def test_invalid_names_are_refused() -> None:
    for bad in ("Test", "a_b", "x" * 33, "../etc", ""):
        proc = _lp("status", f"--name={bad}", timeout=30)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "invalid PBX name" in proc.stderr


def test_down_one_leaves_the_other_and_the_default(
    pbxs: dict[str, dict[str, str]], default_pbx: dict[str, str]
) -> None:
    """Runs last in this module: it stops test-a, then starts it again on the same ports."""
    a, b = pbxs["test-a"], pbxs["test-b"]
    pid_b, pid_default = _pid(b), _pid(default_pbx)
    assert _lp("down", "--name", "test-a", timeout=60).returncode == 0
    assert _lp("status", "--name", "test-a", timeout=30).returncode == 3
    assert _lp("cli", "--name", "test-a", "core", "show", "uptime", timeout=30).returncode == 3
    assert _lp("down", "--name", "test-a", timeout=60).returncode == 0, "idempotent"
    status_b = _lp("status", "--name", "test-b", timeout=30)
    assert status_b.returncode == 0 and parse_exports(status_b.stdout) == b
    status_default = _lp("status", timeout=30)
    assert status_default.returncode == 0 and parse_exports(status_default.stdout) == default_pbx
    assert (_pid(b), _pid(default_pbx)) == (pid_b, pid_default)
    assert _lp("status", "--name", f"never-{uuid.uuid4().hex[:8]}", timeout=30).returncode == 3
    assert _up("test-a") == a, "up again: same ports and credentials"
