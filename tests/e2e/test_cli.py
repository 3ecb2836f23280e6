"""The ``dialerd`` command as an operator runs it: a subprocess, a temporary SQLite file, HTTP from outside."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dialerd.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "dialerd.toml"
KEY_RE = re.compile(r"^dlr_k[0-9a-f]{16}_[A-Za-z0-9_-]+$")
CLI_TIMEOUT = 60.0
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# ---- helpers -------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """The inherited environment without any DIALERD_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
    env.update(extra)
    return env


def _db_env(db: Path, **extra: str) -> dict[str, str]:
    return _env(DIALERD_DATABASE_URL=f"sqlite+aiosqlite:///{db}", **extra)


def _cli(*args: str, env: dict[str, str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialerd", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _create_key(env: dict[str, str], tenant: str = "acme", *limits: str) -> str:
    done = _cli("keys", "create", "--tenant", tenant, *limits, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, f"no key on stdout; stderr: {done.stderr}"
    return lines[-1]


def _secret_part(key: str) -> str:
    return key.split("_", 2)[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tenant_limits(db: Path, name: str) -> list[tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT concurrent_max, calls_per_minute FROM tenant WHERE name = ?", (name,))
        return [tuple(row) for row in rows.fetchall()]


def _db_bytes(db: Path) -> bytes:
    """The database file and any journal / WAL file beside it."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``url``: (HTTP status, decoded JSON body), whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@dataclasses.dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    stdout: Path
    stderr: Path

    def log_records(self) -> list[dict[str, Any]]:
        lines = [line for line in self.stdout.read_text(encoding="utf-8").splitlines() if line.strip()]
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"stdout line is not JSON: {line!r}")
            assert isinstance(record, dict), line
            records.append(record)
        return records


def _wait_for_health(served: Served) -> tuple[int, Any]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(f"dialerd serve exited with {served.process.returncode}: {served.stderr.read_text()}")
        with contextlib.suppress(OSError):
            return _get(served.base + "/health")
        time.sleep(0.1)
    pytest.fail(f"/health did not answer within {STARTUP_TIMEOUT} s")


@contextlib.contextmanager
def _serve(workdir: Path, db: Path) -> Iterator[Served]:
    """Run ``dialerd serve`` with the ARI driver pointed at a closed port; kill it if a test left it up."""
    port, ari_port = _free_port(), _free_port()
    env = _db_env(db, DIALERD_ARI_URL=f"http://127.0.0.1:{ari_port}")
    out, err = workdir / "serve.stdout", workdir / "serve.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dialerd", "serve", "--port", str(port), "--pbx-driver", "ari"],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    served = Served(process, f"http://127.0.0.1:{port}", out, err)
    try:
        _wait_for_health(served)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)


# ---- keys create ---------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "d.db"


def test_keys_create_prints_the_key_alone_on_the_last_line(db: Path) -> None:
    key = _create_key(_db_env(db), "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    assert KEY_RE.match(key), key
    assert _tenant_limits(db, "acme") == [(7, 30)]


def test_keys_create_does_not_store_the_key_in_clear(db: Path) -> None:
    key = _create_key(_db_env(db), "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    stored = _db_bytes(db)
    assert stored, "the database file was not created"
    assert key.encode() not in stored
    assert _secret_part(key).encode() not in stored


def test_keys_create_again_gives_a_new_key_and_updates_limits(db: Path) -> None:
    env = _db_env(db)
    first = _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    second = _create_key(env, "acme", "--concurrent-max", "9", "--calls-per-minute", "45")
    assert KEY_RE.match(second), second
    assert second != first
    assert _tenant_limits(db, "acme") == [(9, 45)], "one tenant row, limits updated"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (keys,) = conn.execute("SELECT count(*) FROM api_key").fetchone()
    assert keys == 2


def test_keys_create_without_limits_keeps_existing_ones(db: Path) -> None:
    env = _db_env(db)
    _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    _create_key(env, "acme")
    assert _tenant_limits(db, "acme") == [(7, 30)]


# ---- check-config --------------------------------------------------------------------------------


def test_check_config_accepts_the_shipped_file_and_prints_the_defaults() -> None:
    done = _cli("check-config", "--config", str(CONFIG), env=_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == dataclasses.asdict(Settings())


def test_check_config_masks_secrets() -> None:
    done = _cli("check-config", env=_env(DIALERD_ARI_PASSWORD="s3cret-pass"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ari_password"] == "***"
    assert "s3cret-pass" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [("[server]\nprot = 8081\n", "server.prot"), ('[server]\nport = "eighty"\n', "server.port")],
)
def test_check_config_refuses_a_bad_file_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    done = _cli("check-config", "--config", str(path), env=_env())
    assert done.returncode != 0
    assert named in done.stderr


def test_check_config_refuses_a_bad_env_value_naming_the_variable() -> None:
    done = _cli("check-config", env=_env(DIALERD_SERVER_PORT="abc"))
    assert done.returncode != 0
    assert "DIALERD_SERVER_PORT" in done.stderr


# ---- serve ---------------------------------------------------------------------------------------


def test_serve_answers_health_and_stops_cleanly_on_sigterm(tmp_path: Path, db: Path) -> None:
    with _serve(tmp_path, db) as served:
        served.process.send_signal(signal.SIGTERM)
        try:
            code = served.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dialerd serve still running {STOP_TIMEOUT} s after SIGTERM")
    assert code == 0, served.stderr.read_text()
    actions = [record.get("action") for record in served.log_records()]
    assert "listening" in actions
    assert "stopped" in actions
    assert actions.index("listening") < actions.index("stopped")


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "70000"], {}, "server_port"),
        ([], {"DIALERD_DIALER_RING_TIMEOUT": "1"}, "dialer_ring_timeout"),
        ([], {"DIALERD_SERVER_PORT": "abc"}, "DIALERD_SERVER_PORT"),
    ],
)
def test_serve_with_an_invalid_setting_exits_at_once_naming_it(
    db: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    started = time.monotonic()
    done = _cli("serve", *args, env=_db_env(db, **env), timeout=STOP_TIMEOUT)
    assert done.returncode != 0
    assert named in done.stderr
    assert time.monotonic() - started < STOP_TIMEOUT


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    """One daemon for the HTTP checks, and keys of both shapes: with and without '_' in the secret part.

    token_urlsafe() draws from an alphabet that includes '_' (about 4 keys in 10 have one), so keep
    minting until both kinds exist: every key the CLI prints must work.
    """
    workdir = tmp_path_factory.mktemp("live")
    db = workdir / "d.db"
    keys: dict[str, str] = {}
    for _ in range(30):
        key = _create_key(_db_env(db))
        keys.setdefault("underscore" if "_" in _secret_part(key) else "plain", key)
        if len(keys) == 2:
            break
    assert len(keys) == 2, f"30 keys and still only {list(keys)}"
    with _serve(workdir, db) as served:
        yield served, keys


def test_health_reports_degraded_while_the_pbx_is_unreachable(live: tuple[Served, dict[str, str]]) -> None:
    served, _ = live
    status, body = _get(served.base + "/health")
    assert body["status"] == "degraded"
    assert body["pbx"]["connected"] is False
    assert body["database"]["ok"] is True
    assert status == 200, f"a degraded daemon is up and must answer 200, got {status}"


def test_api_without_authorization_is_401(live: tuple[Served, dict[str, str]]) -> None:
    served, _ = live
    status, body = _get(served.base + "/api/v1/campaigns")
    assert status == 401
    assert body["error_id"] == "unauthorized"
    assert body["error"]


def test_api_with_a_wrong_key_is_401(live: tuple[Served, dict[str, str]]) -> None:
    served, keys = live
    key = keys["plain"]
    wrong = key[:-1] + ("B" if key.endswith("A") else "A")  # right key id, wrong secret
    status, body = _get(served.base + "/api/v1/campaigns", {"Authorization": f"Bearer {wrong}"})
    assert (status, body["error_id"]) == (401, "unauthorized")


@pytest.mark.parametrize("shape", ["plain", "underscore"])
def test_api_with_a_minted_key_is_200(live: tuple[Served, dict[str, str]], shape: str) -> None:
    served, keys = live
    status, body = _get(served.base + "/api/v1/campaigns", {"Authorization": f"Bearer {keys[shape]}"})
    assert status == 200, f"key {keys[shape]!r} ({shape}) was refused: {body}"
    assert body["campaigns"] == []
    assert body["total"] == 0
