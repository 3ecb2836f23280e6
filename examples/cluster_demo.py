"""dialerd on several PBXs (`make cluster-demo`): three daemons on two local Asterisk PBXs and one
PostgreSQL database dial one campaign together; one daemon is killed midway, another takes its calls
over, and the campaign finishes. Prints what each daemon and each PBX did. Everything on loopback.

Needs root (the local PBXs are chroots) and the PostgreSQL that `.ci/setup` starts (127.0.0.1:5432, trust).
Run as `make cluster-demo`, or `.venv/bin/python examples/cluster_demo.py [--contacts 90]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOCAL_PBX = REPO / "asterisk" / "local-pbx"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PBXS = ("demo-pbx1", "demo-pbx2")
# node -> (its PBX, its ARI app): two daemons share demo-pbx1 (distinct apps), one has demo-pbx2.
NODES = {"node-1": (PBXS[0], "dialerd-1"), "node-2": (PBXS[0], "dialerd-2"), "node-3": (PBXS[1], "dialerd-3")}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            k, v = words[1].split("=", 1)
            env[k] = v
    return env


def pbx_up(name: str, *extra: str) -> dict[str, str]:
    out = subprocess.run([str(LOCAL_PBX), "up", "--name", name, *extra], capture_output=True, text=True, check=True)
    return exports(out.stdout)


def psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", sql],
                   check=True, capture_output=True)


class Node:
    def __init__(self, name: str, pbx: dict[str, str], app: str, db: str, port: int, workdir: Path) -> None:
        self.name, self.port, self.log = name, port, workdir / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
        self.env.update({k: pbx[k] for k in ("DIALERD_ARI_URL", "DIALERD_ARI_USER", "DIALERD_ARI_PASSWORD",
                                             "DIALERD_PBX_ENDPOINT")})
        self.env.update({"DIALERD_DATABASE_URL": db, "DIALERD_ARI_APP": app, "DIALERD_CLUSTER_NODE_ID": name,
                         "DIALERD_CLUSTER_LAPSE": "3", "DIALERD_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dialerd", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = self.health()
            if health and health["pbx"]["connected"]:
                return
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not become healthy; see {self.log}")

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def call(self, method: str, path: str, key: str, body: bytes | None = None, ctype: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key}", **({"Content-Type": ctype} if ctype else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def multipart(fields: dict[str, str], contacts: str) -> tuple[bytes, str]:
    b = "demo" + uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="contacts"; filename="c.csv"\r\n'
                 f"Content-Type: text/csv\r\n\r\n{contacts}\r\n--{b}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={b}"


def cdr_channels(pbx: dict[str, str], prefix: str) -> list[str]:
    path = Path(pbx["DIALERD_PBX_CDR"])
    if not path.exists():
        return []
    # Master.csv: channel 5, dstchannel 6, uniqueid 16. Through the PBX fence a call has a Local ;1 row
    # (uniqueid = the channel id) and a ;2 row ("<id>;2") whose dstchannel is the carrier leg, if one was
    # created; direct, one PJSIP row. One id per call that reached the carrier.
    placed = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for r in csv.reader(fh):
            if len(r) <= 16 or not r[16].startswith(prefix):
                continue
            if r[16].endswith(";2"):
                if r[6].startswith("PJSIP/"):
                    placed.append(r[16].removesuffix(";2"))
            elif not r[5].startswith("Local/"):
                placed.append(r[16])
    return placed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=90)
    parser.add_argument("--cap", type=int, default=9, help="the campaign's max_concurrent_calls")
    args = parser.parse_args()
    workdir = Path(f"/tmp/dialerd-cluster-demo-{os.getpid()}")
    workdir.mkdir()
    say(f"two local PBXs: {', '.join(PBXS)} (one ARI user on both)")
    pbx = {PBXS[0]: pbx_up(PBXS[0])}
    pbx[PBXS[1]] = pbx_up(PBXS[1], "--credentials-of", PBXS[0])
    dbname = f"dialerd_cluster_demo_{os.getpid()}"
    psql(f'CREATE DATABASE "{dbname}"')
    db = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}"
    nodes = {n: Node(n, pbx[p], app, db, free_port(), workdir) for n, (p, app) in NODES.items()}
    try:
        key = subprocess.run([sys.executable, "-m", "dialerd", "keys", "create", "--tenant", "demo",
                              "--concurrent-max", str(args.cap + 3), "--calls-per-minute", "600"],
                             env=nodes["node-1"].env, capture_output=True, text=True, check=True, cwd=REPO
                             ).stdout.strip().splitlines()[-1]
        for node in nodes.values():
            node.start()
            say(f"{node.name} up on {NODES[node.name][0]} (app {NODES[node.name][1]}), API http://127.0.0.1:{node.port}")
        contacts = "phone_number\n" + "".join(f"+1{201 + i}5550{100 + i % 30}\n" for i in range(args.contacts))
        body, ctype = multipart({"name": "cluster demo", "max_concurrent_calls": str(args.cap),
                                 "retries_per_contact": "0"}, contacts)
        cid = nodes["node-1"].call("POST", "/api/v1/campaigns", key, body, ctype)["id"]
        nodes["node-2"].call("POST", f"/api/v1/campaigns/{cid}/start", key)
        say(f"campaign {cid}: {args.contacts} contacts, cap {args.cap}; created on node-1, started on node-2")
        killed = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            view = nodes["node-1"].call("GET", f"/api/v1/campaigns/{cid}", key)
            health = nodes["node-1"].health() or {}
            rows = {n["node_id"]: n for n in health.get("cluster", {}).get("nodes", [])}
            line = "  ".join(f"{n}: {r['state']}{'' if r['alive'] else ' (lapsed)'} {r['calls_in_flight']} up"
                             for n, r in sorted(rows.items()))
            say(f"{view['status']:9} progress {view['progress']:.0%}  |  {line}")
            if view["status"] == "completed":
                break
            if not killed and view["progress"] >= 0.3:
                victim = nodes["node-3"]
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(10)
                killed = True
                say("node-3 killed (SIGKILL) with calls up on demo-pbx2: watch another daemon take it over")
            time.sleep(1.0)
        else:
            say("the campaign did not complete in 5 minutes")
            return 1
        prefix = f"dlr-{cid[4:16]}-"
        placed = {p: cdr_channels(pbx[p], prefix) for p in PBXS}
        total = sum(len(v) for v in placed.values())
        unique = len({c for v in placed.values() for c in v})
        say(f"done: {total} calls in the PBXs' CDRs ({', '.join(f'{p}: {len(v)}' for p, v in placed.items())}), "
            f"{unique} distinct channels for {args.contacts} contacts: "
            f"{'each placed once' if unique == total == args.contacts else 'MISMATCH'}")
        for line in (workdir / "node-1.log").read_text().splitlines() + (workdir / "node-2.log").read_text().splitlines():
            if '"action": "takeover"' in line:
                say("takeover: " + json.loads(line)["msg"] + f" ({json.loads(line)['node_id']})")
        return 0 if unique == total == args.contacts else 1
    finally:
        for node in nodes.values():
            node.stop()
        for name in PBXS:
            subprocess.run([str(LOCAL_PBX), "down", "--name", name], capture_output=True, check=False)
        psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        say(f"logs in {workdir}")


if __name__ == "__main__":
    raise SystemExit(main())
