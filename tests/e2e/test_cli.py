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

from dialerd import cli
from dialerd.api.forms import build_spec
from dialerd.cli import EXIT_CODES, EXIT_CONFIG, EXIT_DATABASE, EXIT_OK, EXIT_USAGE
from dialerd.errors import InvalidInput
from dialerd.services.auth import hash_key
from dialerd.settings import OTHER_ENV, Settings

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


def _post(url: str, key: str, body: bytes = b"", content_type: str = "application/octet-stream") -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": f"Bearer {key}", "Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _create_campaign(base: str, key: str, **fields: Any) -> str:
    boundary = "dialerd-test-boundary"
    parts = [("name", "cli test"), *((k, str(v)) for k, v in fields.items())]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in parts)
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="contacts"; filename="c.csv"\r\n'
             f"Content-Type: text/csv\r\n\r\nphone_number\r\n+14155550101\r\n\r\n--{boundary}--\r\n")
    status, answer = _post(base + "/api/v1/campaigns", key, body.encode(), f"multipart/form-data; boundary={boundary}")
    assert status == 201, answer
    return str(answer["id"])


@contextlib.contextmanager
def _serve(workdir: Path, db: Path) -> Iterator[Served]:
    with _serve_url(workdir, f"sqlite+aiosqlite:///{db}") as served:
        yield served


@contextlib.contextmanager
def _serve_url(workdir: Path, db_url: str) -> Iterator[Served]:
    """Run ``dialerd serve`` with the ARI driver pointed at a closed port; kill it if a test left it up."""
    port, ari_port = _free_port(), _free_port()
    env = _env(DIALERD_DATABASE_URL=db_url, DIALERD_ARI_URL=f"http://127.0.0.1:{ari_port}")
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


def test_keys_create_again_with_the_same_limits_gives_a_new_key(db: Path) -> None:
    env = _db_env(db)
    first = _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    second = _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    assert KEY_RE.match(second), second
    assert second != first
    assert _tenant_limits(db, "acme") == [(7, 30)], "one tenant row"
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


# ---- exit codes, busy port, unknown environment, campaign defaults (issue 9, item 8) ---------------


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command's whole stderr, which must be exactly one line, with no traceback anywhere."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    return lines[0]


def test_serve_on_a_busy_port_is_one_line_naming_server_port(db: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        done = _cli("serve", "--port", str(port), "--pbx-driver", "fake", env=_db_env(db), timeout=STOP_TIMEOUT * 3)
    assert done.returncode == EXIT_CONFIG, done.stderr
    line = _one_line(done)
    assert "server.port" in line
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line
    assert time.monotonic() - started < STOP_TIMEOUT * 3


@pytest.mark.parametrize("command", [["check-config"], ["serve", "--pbx-driver", "fake"], ["keys", "list"]])
def test_an_unknown_dialerd_variable_is_refused_naming_it(db: Path, command: list[str]) -> None:
    done = _cli(*command, env=_db_env(db, DIALERD_FOO="1"), timeout=STOP_TIMEOUT * 3)
    assert done.returncode == EXIT_CONFIG
    assert "DIALERD_FOO" in _one_line(done)
    assert not db.exists(), "refused before anything was opened"


def test_a_misspelt_setting_in_the_environment_gets_a_suggestion() -> None:
    done = _cli("check-config", env=_env(DIALERD_SERVER_PROT="9000"))
    assert done.returncode == EXIT_CONFIG
    line = _one_line(done)
    assert "DIALERD_SERVER_PROT" in line
    assert "DIALERD_SERVER_PORT" in line


def test_the_declared_non_setting_variables_are_accepted() -> None:
    env = _env(**dict.fromkeys(OTHER_ENV, "1"))
    done = _cli("check-config", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout) == dataclasses.asdict(Settings())


BAD_DEFAULTS = [
    ("default_destination", "dialerd-demo", "destination"),  # no extension
    ("default_destination", "stasis:", "destination"),
    ("default_destination", "ctx,s,0", "destination"),
    ("default_destination", "ctx,s;Hangup,1", "destination"),
    ("default_region", "XX", "default_region"),
    ("default_region", "USA", "default_region"),
    ("default_caller_id", "Acme <+14155550100>;x", "caller_id"),
    ("default_caller_id", "x" * 81, "caller_id"),
]


@pytest.mark.parametrize(("key", "value", "form_field"), BAD_DEFAULTS)
def test_check_config_refuses_a_bad_campaign_default_naming_it(
    tmp_path: Path, key: str, value: str, form_field: str
) -> None:
    # The API's own rule: the create form refuses the same value in the field the default stands in for.
    with pytest.raises(InvalidInput) as refused:
        build_spec({"name": "x", form_field: value}, Settings())
    assert refused.value.details["field"] == form_field
    for how, extra in (("env", {f"DIALERD_DIALER_{key.upper()}": value}), ("file", {})):
        args = ["check-config"]
        if how == "file":
            path = tmp_path / "d.toml"
            path.write_text(f"[dialer]\n{key} = {json.dumps(value)}\n", encoding="utf-8")
            args += ["--config", str(path)]
        done = _cli(*args, env=_env(**extra))
        assert done.returncode == EXIT_CONFIG, (how, done.stdout)
        line = _one_line(done)
        assert f"dialer.{key}" in line, (how, line)
        assert done.stdout == ""


def test_serve_refuses_a_bad_campaign_default_at_once(db: Path) -> None:
    done = _cli("serve", "--pbx-driver", "fake", env=_db_env(db, DIALERD_DIALER_DEFAULT_REGION="XX"),
                timeout=STOP_TIMEOUT)
    assert done.returncode == EXIT_CONFIG
    assert "dialer.default_region" in _one_line(done)


def test_check_config_accepts_good_campaign_defaults() -> None:
    env = _env(DIALERD_DIALER_DEFAULT_DESTINATION="stasis:ivr,sales", DIALERD_DIALER_DEFAULT_REGION="gb",
               DIALERD_DIALER_DEFAULT_CALLER_ID='"Acme" <+14155550100>')
    done = _cli("check-config", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["dialer_default_destination"] == "stasis:ivr,sales"


# ---- exit codes as documented --------------------------------------------------------------------


def _documented_exit_codes(path: Path) -> dict[int, str]:
    """The `| code | meaning |` rows of the table under the "## Exit codes" heading."""
    text = path.read_text(encoding="utf-8")
    section = text.split("\n## Exit codes\n", 1)
    assert len(section) == 2, f"{path} has no '## Exit codes' section"
    body = section[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *`?(\d+)`? *\| *(.+?) *\|$", body, flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_the_documented_exit_codes_are_the_real_ones() -> None:
    documented = _documented_exit_codes(REPO / "docs" / "operations.md")
    assert sorted(documented) == sorted(EXIT_CODES)
    constants = {value for name, value in vars(cli).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert constants == set(EXIT_CODES), "every EXIT_* constant is in EXIT_CODES (and so in the docs)"
    assert EXIT_CONFIG == 78, "systemd/dialerd.service: RestartPreventExitStatus=78"
    unit = (REPO / "systemd" / "dialerd.service").read_text(encoding="utf-8")
    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in unit


def test_help_lists_the_exit_codes() -> None:
    done = _cli("--help", env=_env())
    assert done.returncode == EXIT_OK
    listed = {int(m) for m in re.findall(r"^ +(\d+) +\S", done.stdout.split("exit codes:", 1)[1], re.MULTILINE)}
    assert listed == set(EXIT_CODES)


def test_a_bad_command_line_exits_with_the_usage_code() -> None:
    done = _cli("keys", "frobnicate", env=_env())
    assert done.returncode == EXIT_USAGE


def test_an_unreachable_database_is_one_line_with_its_code() -> None:
    url = f"postgresql+asyncpg://dialerd:pw-not-shown@127.0.0.1:{_free_port()}/dialerd"
    for command in (["keys", "list"], ["tenants", "list"], ["migrate"]):
        done = _cli(*command, env=_env(DIALERD_DATABASE_URL=url))
        assert done.returncode == EXIT_DATABASE, (command, done.stderr)
        line = _one_line(done)
        assert "database" in line
        assert "pw-not-shown" not in line


# ---- keys list / revoke, tenants list / set, on SQLite and PostgreSQL ------------------------------


def _store_env(url: str, **extra: str) -> dict[str, str]:
    return _env(DIALERD_DATABASE_URL=url, **extra)


def _tenants(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = _cli("tenants", "list", "--json", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    return {t["name"]: t for t in json.loads(done.stdout)}


def _limits(env: dict[str, str], name: str) -> tuple[int, int]:
    tenant = _tenants(env)[name]
    return tenant["concurrent_max"], tenant["calls_per_minute"]


def _key_id(key: str) -> str:
    return key.split("_", 2)[1]


def test_keys_list_shows_ids_and_tenants_never_a_key(db_url: str) -> None:
    env = _store_env(db_url)
    keys = [_create_key(env, "acme"), _create_key(env, "acme"), _create_key(env, "globex")]
    table = _cli("keys", "list", env=env)
    assert table.returncode == EXIT_OK, table.stderr
    as_json = _cli("keys", "list", "--json", env=env)
    assert as_json.returncode == EXIT_OK, as_json.stderr
    listed = json.loads(as_json.stdout)
    assert [(k["id"], k["tenant"]) for k in listed] == [
        (_key_id(keys[0]), "acme"), (_key_id(keys[1]), "acme"), (_key_id(keys[2]), "globex")
    ]
    assert all(k["revoked_at"] is None and k["last_used_at"] is None and k["created_at"] for k in listed)
    for key in keys:
        assert _key_id(key) in table.stdout
        for output in (table.stdout + table.stderr, as_json.stdout + as_json.stderr):
            assert _secret_part(key) not in output
            assert hash_key(key) not in output
    only = json.loads(_cli("keys", "list", "--json", "--tenant", "globex", env=env).stdout)
    assert [k["id"] for k in only] == [_key_id(keys[2])]


def test_keys_revoke_turns_the_key_away_over_http(tmp_path: Path, db_url: str) -> None:
    env = _store_env(db_url)
    revoked, kept = _create_key(env, "acme"), _create_key(env, "acme")
    with _serve_url(tmp_path, db_url) as served:
        for key in (revoked, kept):
            assert _get(served.base + "/api/v1/campaigns", {"Authorization": f"Bearer {key}"})[0] == 200
        done = _cli("keys", "revoke", _key_id(revoked), env=env)
        assert done.returncode == EXIT_OK, done.stderr
        assert _key_id(revoked) in done.stdout
        status, body = _get(served.base + "/api/v1/campaigns", {"Authorization": f"Bearer {revoked}"})
        assert (status, body["error_id"]) == (401, "unauthorized"), "the running daemon refuses it at once"
        assert _get(served.base + "/api/v1/campaigns", {"Authorization": f"Bearer {kept}"})[0] == 200
    listed = {k["id"]: k for k in json.loads(_cli("keys", "list", "--json", env=env).stdout)}
    assert listed[_key_id(revoked)]["revoked_at"] is not None
    assert listed[_key_id(kept)]["revoked_at"] is None
    assert listed[_key_id(kept)]["last_used_at"] is not None, "a key that authenticated a request"
    again = _cli("keys", "revoke", _key_id(revoked), env=env)
    assert again.returncode == EXIT_OK, "revoking twice is harmless"
    assert "already revoked" in again.stdout
    assert _tenants(env)["acme"]["active_keys"] == 1


def test_keys_revoke_takes_a_whole_key_without_echoing_its_secret(db_url: str) -> None:
    env = _store_env(db_url)
    key = _create_key(env, "acme")
    done = _cli("keys", "revoke", key, env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert _secret_part(key) not in done.stdout + done.stderr
    assert json.loads(_cli("keys", "list", "--json", env=env).stdout)[0]["revoked_at"] is not None


def test_keys_revoke_of_an_unknown_id_is_refused(db_url: str) -> None:
    env = _store_env(db_url)
    _create_key(env, "acme")
    done = _cli("keys", "revoke", "k0000000000000000", env=env)
    assert done.returncode == EXIT_USAGE
    assert "k0000000000000000" in _one_line(done)


def test_keys_create_refuses_new_limits_for_an_existing_tenant(db_url: str) -> None:
    env = _store_env(db_url)
    _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    done = _cli("keys", "create", "--tenant", "acme", "--concurrent-max", "9", "--calls-per-minute", "30", env=env)
    assert done.returncode == EXIT_USAGE
    line = _one_line(done)
    assert "dialerd tenants set --tenant acme --concurrent-max 9" in line
    assert "concurrent_max 7" in line
    assert done.stdout == "", "no key was minted"
    assert _limits(env, "acme") == (7, 30), "limits unchanged"
    assert _tenants(env)["acme"]["active_keys"] == 1
    # The same limits again (a re-run script) and no limits both still mint a key.
    _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    _create_key(env, "acme")
    assert _limits(env, "acme") == (7, 30)
    assert _tenants(env)["acme"]["active_keys"] == 3


def test_tenants_set_changes_the_limits(db_url: str) -> None:
    env = _store_env(db_url)
    _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    _create_key(env, "globex")
    done = _cli("tenants", "set", "--tenant", "acme", "--concurrent-max", "12", "--calls-per-minute", "90", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert "concurrent_max 12" in done.stdout and "calls_per_minute 90" in done.stdout
    assert _limits(env, "acme") == (12, 90)
    done = _cli("tenants", "set", "--tenant", "acme", "--calls-per-minute", "45", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert _limits(env, "acme") == (12, 45), "a limit left out is kept"
    defaults = Settings()
    assert _limits(env, "globex") == (defaults.dialer_tenant_concurrent_max, defaults.dialer_tenant_calls_per_minute)
    table = _cli("tenants", "list", env=env)
    assert table.returncode == EXIT_OK
    assert re.search(r"^acme +t[0-9a-f]{16} +12 +45 +0 +0 +0 +0 +- +1 ", table.stdout, re.MULTILINE), table.stdout


def test_tenant_rule_limits_are_set_by_create_and_set(db_url: str) -> None:
    """The issue 11 limits: given at create for a new tenant, changed by tenants set, 0 = no limit, listed."""
    env = _store_env(db_url)
    _create_key(env, "acme", "--daily-calls-max", "500", "--max-attempts-per-number", "3",
                "--frequency-window-hours", "24", "--timezone", "america/new_york")
    acme = _tenants(env)["acme"]
    assert (acme["daily_calls_max"], acme["daily_minutes_max"]) == (500, 0)
    assert (acme["max_attempts_per_number"], acme["frequency_window_hours"]) == (3, 24)
    assert acme["timezone"] == "America/New_York", "the zone is stored by its canonical name"
    done = _cli("tenants", "set", "--tenant", "acme", "--daily-minutes-max", "90", "--daily-calls-max", "0",
                env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert "daily_minutes_max 90" in done.stdout and "daily_calls_max 0" in done.stdout
    acme = _tenants(env)["acme"]
    assert (acme["daily_calls_max"], acme["daily_minutes_max"], acme["max_attempts_per_number"]) == (0, 90, 3)
    # The same rule limits again on a re-run create mint a key; different ones are refused with the command.
    _create_key(env, "acme", "--daily-minutes-max", "90")
    refused = _cli("keys", "create", "--tenant", "acme", "--daily-minutes-max", "91", env=env)
    assert refused.returncode == EXIT_USAGE
    assert "dialerd tenants set --tenant acme --daily-minutes-max 91" in _one_line(refused)
    assert refused.stdout == ""


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-attempts-per-number", "3"], "frequency_window_hours"),
        (["--frequency-window-hours", "24"], "max_attempts_per_number"),
        (["--daily-calls-max", "-1"], "daily_calls_max"),
        (["--frequency-window-hours", "9000", "--max-attempts-per-number", "2"], "frequency_window_hours"),
        (["--timezone", "Mars/Olympus"], "timezone"),
    ],
)
def test_tenant_rule_limits_refused_naming_the_problem(db_url: str, args: list[str], named: str) -> None:
    env = _store_env(db_url)
    _create_key(env, "acme")
    for command in (["tenants", "set", "--tenant", "acme"], ["keys", "create", "--tenant", "globex"]):
        done = _cli(*command, *args, env=env)
        assert done.returncode == EXIT_USAGE, (command, done.stderr)
        assert named in _one_line(done)
        assert done.stdout == ""
    tenants = _tenants(env)
    assert "globex" not in tenants, "no tenant was created"
    assert (tenants["acme"]["daily_calls_max"], tenants["acme"]["max_attempts_per_number"],
            tenants["acme"]["timezone"]) == (0, 0, "")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tenant", "nobody", "--concurrent-max", "3"], "nobody"),
        (["--tenant", "acme"], "--concurrent-max"),
        (["--tenant", "acme", "--concurrent-max", "0"], "concurrent_max"),
    ],
)
def test_tenants_set_refuses_naming_the_problem(db_url: str, args: list[str], named: str) -> None:
    env = _store_env(db_url)
    _create_key(env, "acme", "--concurrent-max", "7", "--calls-per-minute", "30")
    done = _cli("tenants", "set", *args, env=env)
    assert done.returncode == EXIT_USAGE
    assert named in _one_line(done)
    assert _limits(env, "acme") == (7, 30)


def test_tenant_limits_set_through_the_cli_reach_the_running_daemon(tmp_path: Path, db_url: str) -> None:
    """tenants set on a live daemon: the reservation check on start reads the new concurrent_max (lowered
    below the campaign's cap after its create, which refuses a cap above the tenant's), then raised again."""
    env = _store_env(db_url)
    key = _create_key(env, "acme", "--concurrent-max", "2", "--calls-per-minute", "30")
    with _serve_url(tmp_path, db_url) as served:
        cid = _create_campaign(served.base, key, max_concurrent_calls=2)
        assert _cli("tenants", "set", "--tenant", "acme", "--concurrent-max", "1", env=env).returncode == EXIT_OK
        status, body = _post(served.base + f"/api/v1/campaigns/{cid}/start", key)
        assert status == 409, body
        assert _cli("tenants", "set", "--tenant", "acme", "--concurrent-max", "2", env=env).returncode == EXIT_OK
        status, body = _post(served.base + f"/api/v1/campaigns/{cid}/start", key)
        assert status == 200, body
