"""dialerd as a real subprocess (for crash, outage and shutdown tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.pbx_env import local_pbx_env

REPO = Path(__file__).resolve().parent.parent


def daemon_env(db_url: str, app: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
    env.update({k: v for k, v in local_pbx_env().items() if k.startswith(("DIALERD_ARI_", "DIALERD_AMI_"))})
    env.update({
        "DIALERD_PBX_ENDPOINT": local_pbx_env()["DIALERD_PBX_ENDPOINT"],
        "DIALERD_DATABASE_URL": db_url,
        "DIALERD_ARI_APP": app,
        "DIALERD_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def create_key(env: dict[str, str], tenant: str, concurrent_max: int = 10, cpm: int = 600) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dialerd", "keys", "create", "--tenant", tenant, "--concurrent-max",
         str(concurrent_max), "--calls-per-minute", str(cpm)],
        env=env, capture_output=True, text=True, timeout=60, check=True, cwd=REPO,
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class DaemonProc:
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str] | None = None, wait_pbx: bool = True) -> None:
        env = dict(self.env, **(extra_env or {}))
        log = self.log_path.open("ab")
        log.write(f"\n==== start {self.starts} {extra_env or ''}\n".encode())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dialerd", "serve", "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        log.close()
        self.starts += 1
        self.wait_health(pbx=wait_pbx)

    def wait_health(self, pbx: bool = True, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return {"exited": self.proc.returncode}
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as resp:
                    body: dict[str, Any] = json.loads(resp.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
                continue
            if not pbx or body["pbx"]["connected"]:
                return body
            time.sleep(0.05)
        raise AssertionError(f"dialerd not healthy within {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 90.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, method: str, path: str, key: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method, data=body,
                                     headers={"Authorization": f"Bearer {key}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def multipart(fields: dict[str, str], csv: str) -> tuple[bytes, str]:
    boundary = "dialerdtest" + os.urandom(6).hex()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="contacts"; filename="c.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    )
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


def placed(rows: list[list[str]], prefix: str) -> list[str]:
    """The channel ids among CDR ``rows`` whose call reached the carrier, once per call. Direct: the PJSIP
    channel's row (uniqueid = the channel id). Through the PBX fence (several daemons on PostgreSQL): the
    Local ;2 row ("<id>;2") whose dstchannel is the carrier leg; its ;1 row (uniqueid = the id, channel
    Local/...) is not a call to the carrier, nor is a ;2 row the fence refused (no dstchannel)."""
    out = []
    for r in rows:
        uid = r[16]
        if not uid.startswith(prefix):
            continue
        if uid.endswith(";2"):
            if r[6].startswith("PJSIP/"):
                out.append(uid.removesuffix(";2"))
        elif not r[5].startswith("Local/"):
            out.append(uid)
    return out


def cdr_rows(since: str) -> list[list[str]]:
    """Asterisk's own CDR rows (Master.csv) that started at or after ``since`` (YYYY-MM-DD HH:MM:SS)."""
    import csv

    path = Path(local_pbx_env()["DIALERD_PBX_CDR"])
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        return [row for row in csv.reader(fh) if len(row) > 16 and row[9] >= since]
