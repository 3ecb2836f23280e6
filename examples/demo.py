"""dialerd end to end in about half a minute, against the local Asterisk and its simulated carrier.

    .venv/bin/python examples/demo.py [--raw] [--keep-running] [--timeout 180] [--driver ari|ami]

What it does, each step printed as it happens:

1. ``asterisk/local-pbx up`` (idempotent) and read the ``export`` lines it prints;
2. a fresh SQLite database in ``.venv/demo/``, an API key (``dialerd keys create``), and ``dialerd serve``
   on a free port, logging to ``.venv/demo/dialerd.log``;
3. wait for ``GET /health`` to report the PBX connected;
4. upload ``examples/contacts.csv`` and print the import report (bad rows, duplicates);
5. start the campaign and follow ``GET /api/v1/campaigns/{id}/events`` (Server-Sent Events) until
   ``event: end``: the first frames verbatim, then one readable line per event;
6. print the outcome per contact, stop dialerd with SIGTERM and check it exits 0.

The last line is ``SUMMARY {json}`` for scripts (``tests/e2e/test_demo.py`` reads it). Exit status 0 on
success, 1 with a message naming the failed step, 130 on Ctrl-C. Needs only the standard library and
aiohttp; it is a client of dialerd, not part of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import aiohttp
except ImportError:
    sys.exit("examples/demo.py needs aiohttp: run `make demo`, or `.venv/bin/python examples/demo.py`")

REPO = Path(__file__).resolve().parent.parent
LOCAL_PBX = REPO / "asterisk" / "local-pbx"
CONTACTS = REPO / "examples" / "contacts.csv"
STATE_DIR = REPO / ".venv" / "demo"

TENANT = "demo"
CAMPAIGN_FORM = {
    "name": "demo campaign",
    "default_region": "US",
    "max_concurrent_calls": "5",
    "ring_timeout_seconds": "8",
    "caller_id": "+14155550000",
}
RAW_FRAMES = 4  # frames shown verbatim before the readable view takes over
HEALTH_TIMEOUT = 30.0
PBX_UP_TIMEOUT = 600.0  # a first `up` builds Asterisk's root file system
STOP_TIMEOUT = 90.0  # dialerd lets live calls finish for up to 60 s after SIGTERM

# What the simulated carrier does, by the last two digits of +1 NXX 555-01XX (asterisk/README.md).
CARRIER = [
    (range(0, 30), "answers, 2 s"),
    (range(30, 40), "answers, 20 s"),
    (range(40, 50), "busy (486)"),
    (range(50, 60), "rings, no answer"),
    (range(60, 70), "congestion (503)"),
    (range(70, 80), "not found (404)"),
    (range(80, 90), "declines (603)"),
    (range(90, 100), "rings 3 s, answers"),
]
Q850 = {1: "unallocated number", 16: "normal clearing", 17: "user busy", 19: "no answer", 21: "call rejected",
        34: "congestion"}
STATUS_ORDER = ("pending", "originated", "connected", "completed", "failed", "cancelled")


class DemoError(Exception):
    """A step failed; the message says which one and why."""


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def carrier_behaviour(e164: str) -> str:
    if len(e164) == 12 and e164.startswith("+1") and e164[5:10] == "55501":
        last = int(e164[-2:])
        return next(text for digits, text in CARRIER if last in digits)
    return "-"


# ---- the PBX and the daemon process ----------------------------------------------------------------


def pbx_settings() -> dict[str, str]:
    """Start (or reuse) the local Asterisk and return the DIALERD_* settings it exports."""
    try:
        done = subprocess.run([str(LOCAL_PBX), "up"], capture_output=True, text=True, timeout=PBX_UP_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoError(f"could not run {LOCAL_PBX} up: {exc}") from None
    if done.returncode != 0:
        raise DemoError(f"asterisk/local-pbx up exited {done.returncode} (it needs root):\n{done.stderr.strip()}")
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    if "DIALERD_ARI_URL" not in env:
        raise DemoError(f"asterisk/local-pbx up printed no DIALERD_ARI_URL; its output was:\n{done.stdout}")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dialerd:
    """``dialerd serve`` as a child process with its own state directory and log file."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.db = state_dir / "dialerd.db"
        self.log = state_dir / "dialerd.log"
        self.pid_file = state_dir / "dialerd.pid"
        self.env = {**env, "DIALERD_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}"}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Stop a daemon an earlier ``--keep-running`` demo left behind, and remove the old database."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"dialerd" in cmdline and b"serve" in cmdline:
                print(f"stopping the dialerd an earlier --keep-running demo left running (pid {pid})")
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)

    def cli(self, *args: str) -> str:
        """Run ``python -m dialerd ARGS`` and return its stdout."""
        cmd = [sys.executable, "-m", "dialerd", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.env, cwd=REPO,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise DemoError(f"`dialerd {' '.join(args)}` did not finish in 60 s") from None
        if done.returncode != 0:
            raise DemoError(f"`dialerd {' '.join(args)}` exited {done.returncode}:\n{done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.port = free_port()
        with self.log.open("wb") as log:
            # A session of its own: Ctrl-C reaches only the demo, which then stops dialerd in order,
            # and --keep-running leaves it up after the demo exits.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dialerd", "serve", "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit status (SIGKILL and -9 if it does not stop in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid_file.unlink(missing_ok=True)
        return self.proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join("    " + line for line in text[-lines:]) or "    (log is empty)"


# ---- HTTP ----------------------------------------------------------------------------------------------


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session = session
        self.base = base
        self.auth = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        try:
            async with self.session.request(method, self.base + path, headers=self.auth, **kwargs) as resp:
                body = await resp.json(content_type=None) if resp.content_type == "application/json" else None
                if resp.status != expect:
                    message = body.get("error") if isinstance(body, dict) else await resp.text()
                    raise DemoError(f"{method} {path} answered {resp.status}: {message}")
                return body
        except aiohttp.ClientError as exc:
            raise DemoError(f"{method} {path} failed: {exc}") from None

    async def all_contacts(self, cid: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = await self.call("GET", f"/api/v1/campaigns/{cid}/contacts?limit=1000&offset={len(out)}")
            out.extend(page["contacts"])
            if page["next_offset"] is None:
                return out


async def wait_healthy(api: Api, daemon: Dialerd) -> dict[str, Any]:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    last: Any = "no answer yet"
    while time.monotonic() < deadline:
        code = daemon.exited()
        if code is not None:
            raise DemoError(f"dialerd exited {code} while starting; the end of {daemon.log}:\n{daemon.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with api.session.get(api.base + "/health") as resp:
                last = await resp.json(content_type=None)
                if isinstance(last, dict) and last.get("pbx", {}).get("connected"):
                    return last
        await asyncio.sleep(0.2)
    raise DemoError(f"GET /health did not report the PBX connected within {HEALTH_TIMEOUT:.0f} s; last answer: "
                    f"{json.dumps(last)}; the end of {daemon.log}:\n{daemon.log_tail()}")


# ---- the event stream ---------------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE frame as received: its raw lines and the parsed fields."""

    lines: list[str]
    event: str = "message"
    id: str | None = None
    data: Any = None

    @property
    def comment(self) -> bool:
        return all(line.startswith(":") for line in self.lines)


@dataclass
class EventView:
    """Prints frames (raw at first, readable after) and keeps what the summary needs."""

    raw_frames: int
    names: dict[str, str]
    t0: float
    shown_raw: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    talk: dict[str, float] = field(default_factory=dict)
    end: dict[str, Any] | None = None

    def show(self, frame: Frame) -> None:
        self.record(frame)
        if self.shown_raw < self.raw_frames:
            print("\n".join(frame.lines) + "\n", flush=True)
            self.shown_raw += 1
            if self.shown_raw == self.raw_frames and frame.event != "end":
                print("-- readable view from here on (--raw prints every frame verbatim) --", flush=True)
            return
        if frame.event == "end":
            print(f"{self.clock(None)}  end          the server closes the stream with:")
            print("\n".join(frame.lines), flush=True)
        elif frame.data is not None:
            print(self.line(frame), flush=True)

    def record(self, frame: Frame) -> None:
        if frame.comment:
            self.kinds["heartbeat"] += 1
            return
        if frame.data is None:  # a field-only frame such as "retry: 2000"
            return
        data = frame.data if isinstance(frame.data, dict) else {}
        self.kinds["snapshot" if frame.event == "message" else frame.event] += 1
        if frame.event == "completed" and data.get("talk_seconds") is not None:
            self.talk[data["phone_number"]] = data["talk_seconds"]
        if frame.event == "end":
            self.end = data

    def clock(self, at: str | None) -> str:
        when = datetime.fromisoformat(at).astimezone() if at else datetime.now().astimezone()
        return f"{when:%H:%M:%S}.{when.microsecond // 1000:03d} {when.timestamp() - self.t0:+6.1f}s"

    def line(self, frame: Frame) -> str:
        d = frame.data if isinstance(frame.data, dict) else {}
        if frame.event == "message":
            counts = d.get("contacts", {})
            parts = ", ".join(f"{s} {counts[s]}" for s in STATUS_ORDER if counts.get(s))
            return (f"{self.clock(d.get('at'))}  snapshot     {d.get('status')}, {d.get('calls_in_flight')} in flight"
                    f" | {parts} | {d.get('calls_per_minute')} calls/min, {d.get('answer_rate', 0):.0%} answered, "
                    f"avg talk {d.get('avg_talk_seconds') or 0:.1f} s")
        if frame.event == "campaign":
            return f"{self.clock(None)}  campaign     {d.get('previous')} -> {d.get('status')} ({d.get('action')})"
        number = d.get("phone_number") or "?"
        who = f"{number:<13} {self.names.get(number, ''):<10}"
        details = {
            "originated": f"dialling, attempt {d.get('attempt')}",
            "connected": "answered",
            "completed": f"hung up after {d.get('talk_seconds') or 0:.1f} s talk, {cause(d.get('cause'))}",
            "failed": f"{d.get('reason')}: {cause(d.get('cause'))}, SIP {d.get('sip_code') or '-'}",
            "pending": f"{d.get('reason')}, retry at {d.get('retry_at')}",
            "cancelled": f"{d.get('reason')}",
        }.get(frame.event, json.dumps(d))
        return f"{self.clock(d.get('at'))}  {frame.event:<12} {who} {details}"


def cause(code: Any) -> str:
    return "no cause" if code is None else f"cause {code} ({Q850.get(code, 'see Q.850')})"


async def follow(api: Api, cid: str, view: EventView) -> None:
    """Read the campaign's SSE stream from the first event (Last-Event-ID: 0) until ``event: end``."""
    headers = {**api.auth, "Last-Event-ID": "0", "Accept": "text/event-stream"}
    # Snapshots come every 2 s and heartbeats every 15 s: 45 s of silence means the stream is dead.
    timeout = aiohttp.ClientTimeout(total=None, sock_read=45)
    path = f"/api/v1/campaigns/{cid}/events"
    try:
        async with api.session.get(api.base + path, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise DemoError(f"GET {path} answered {resp.status}: {await resp.text()}")
            frame = Frame([])
            async for chunk in resp.content:
                line = chunk.decode("utf-8").rstrip("\r\n")
                if line:
                    frame.lines.append(line)
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        frame.event = value
                    elif name == "id":
                        frame.id = value
                    elif name == "data":
                        frame.data = value if frame.data is None else f"{frame.data}\n{value}"
                    continue
                if not frame.lines:
                    continue
                if isinstance(frame.data, str):
                    frame.data = json.loads(frame.data)
                view.show(frame)
                if frame.event == "end":
                    return
                frame = Frame([])
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DemoError(f"the event stream broke: {exc!r}") from None
    raise DemoError("the server closed the event stream before `event: end`")


# ---- the demo ------------------------------------------------------------------------------------------


def print_import(body: dict[str, Any]) -> dict[str, Any]:
    report = body["import"]
    print(f"campaign {body['id']} ({body['status']}): {report['rows_total']} rows read, "
          f"{report['contacts']} contacts stored, {report['duplicates']} duplicate(s) collapsed, "
          f"{report['rows_rejected']} row(s) rejected; custom fields: {', '.join(report['custom_fields'])}")
    for p in report["problems"]:
        print(f"  rejected line {p['line']}: {p['value']!r}: {p['reason']} ({p['code']})")
    return {
        "rows_total": report["rows_total"], "contacts": report["contacts"], "duplicates": report["duplicates"],
        "rejected": [{"line": p["line"], "value": p["value"], "code": p["code"]} for p in report["problems"]],
    }


def print_contacts(contacts: list[dict[str, Any]], talk: dict[str, float]) -> None:
    head = f"  {'line':>4}  {'number':<13} {'name':<10} {'carrier':<19} {'status':<10} {'reason':<15} " \
           f"{'tries':>5} {'cause':>5} {'SIP':>4} {'talk':>6}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for c in sorted(contacts, key=lambda c: c["line"]):
        number = c["phone_number"]
        seconds = f"{talk[number]:.1f}s" if number in talk else "-"
        print(f"  {c['line']:>4}  {number:<13} {c['custom_fields'].get('first_name', ''):<10} "
              f"{carrier_behaviour(number):<19} {c['status']:<10} {c['failure_reason'] or '-':<15} "
              f"{c['attempts']:>5} {c['hangup_cause'] if c['hangup_cause'] is not None else '-':>5} "
              f"{c['sip_code'] or '-':>4} {seconds:>6}")


def curl(base: str, key: str, path: str, *extra: str) -> str:
    """A curl command line the user can paste."""
    return shlex.join(["curl", *extra, "-H", f"Authorization: Bearer {key}", base + path])


async def run_campaign(daemon: Dialerd, key: str, args: argparse.Namespace) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        api = Api(session, daemon.url, key)
        step(f"Waiting for dialerd on {daemon.url} to connect to Asterisk")
        health = await wait_healthy(api, daemon)
        print(f"GET /health: {json.dumps(health)}")

        step(f"Uploading {CONTACTS.relative_to(REPO)} (POST /api/v1/campaigns, multipart)")
        form = aiohttp.FormData()
        for name, value in CAMPAIGN_FORM.items():
            form.add_field(name, value)
        form.add_field("contacts", CONTACTS.read_bytes(), filename=CONTACTS.name, content_type="text/csv")
        created = await api.call("POST", "/api/v1/campaigns", expect=201, data=form)
        cid = created["id"]
        imported = print_import(created)
        names = {c["phone_number"]: c["custom_fields"].get("first_name", "") for c in await api.all_contacts(cid)}

        step("Starting it and following its event stream (Server-Sent Events)")
        started = await api.call("POST", f"/api/v1/campaigns/{cid}/start")
        print("The same stream from another terminal:")
        print(f"  {curl(daemon.url, key, f'/api/v1/campaigns/{cid}/events', '-N', '-H', 'Last-Event-ID: 0')}")
        print(f"First {'frames' if args.raw else f'{RAW_FRAMES} frames'} verbatim:\n")
        t0 = datetime.fromisoformat(started["started_at"]).timestamp() if started.get("started_at") else time.time()
        view = EventView(raw_frames=sys.maxsize if args.raw else RAW_FRAMES, names=names, t0=t0)
        await follow(api, cid, view)

        step("Outcome")
        final = await api.call("GET", f"/api/v1/campaigns/{cid}")
        counts = final["contacts"]
        contacts = await api.all_contacts(cid)
        failures = Counter(c["failure_reason"] for c in contacts if c["status"] == "failed")
        print(f"campaign {final['status']}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUS_ORDER
                                                          if counts.get(s)) + f" of {counts['total']} contacts")
        if failures:
            print("failures: " + ", ".join(f"{n} {reason}" for reason, n in sorted(failures.items())))
        print()
        print_contacts(contacts, view.talk)
        if final["status"] != "completed":
            raise DemoError(f"the campaign ended {final['status']}, not completed; see {daemon.log}")
        return {
            "campaign_id": cid,
            "status": final["status"],
            "stream_end": view.end,
            "events": dict(view.kinds),
            "import": imported,
            "counts": counts,
            "failures": dict(failures),
            "contacts": {
                c["phone_number"]: {
                    "line": c["line"], "status": c["status"], "reason": c["failure_reason"],
                    "cause": c["hangup_cause"], "sip_code": c["sip_code"], "attempts": c["attempts"],
                    "talk_seconds": view.talk.get(c["phone_number"]),
                }
                for c in contacts
            },
        }


def print_keep_running(daemon: Dialerd, key: str, cid: str) -> None:
    pid = daemon.proc.pid if daemon.proc else "?"
    step(f"dialerd keeps running (pid {pid})")
    print(f"  URL:  {daemon.url}\n  key:  {key}\n  log:  {daemon.log}\n  db:   {daemon.db}")
    print("Try:")
    for path, extra in (
        ("/api/v1/campaigns", ["-s"]),
        (f"/api/v1/campaigns/{cid}/contacts?status=failed", ["-s"]),
        (f"/api/v1/campaigns/{cid}/events", ["-N", "-H", "Last-Event-ID: 0"]),
        ("/api/v1/campaigns", ["-s", "-F", "name=again", "-F", "default_region=US", "-F", f"contacts=@{CONTACTS}"]),
    ):
        print(f"  {curl(daemon.url, key, path, *extra)}")
    print("  (a new campaign is a draft: POST /api/v1/campaigns/<id>/start dials it)")
    print(f"Stop it with: kill {pid}   (running the demo again also stops it)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run dialerd against the local Asterisk with examples/contacts.csv.")
    p.add_argument("--raw", action="store_true", help="print every SSE frame verbatim instead of readable lines")
    p.add_argument("--keep-running", action="store_true", help="leave dialerd up afterwards and show how to use it")
    p.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds (default 180)")
    p.add_argument("--driver", choices=["ari", "ami"], default="ari", help="how dialerd talks to Asterisk")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR, help=f"database and log (default {STATE_DIR})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    daemon: Dialerd | None = None
    try:
        step("Starting the local Asterisk (asterisk/local-pbx up)")
        pbx = pbx_settings()
        print(f"Asterisk {pbx.get('DIALERD_PBX_ASTERISK_VERSION', '?')}: ARI {pbx['DIALERD_ARI_URL']}, "
              f"AMI port {pbx.get('DIALERD_AMI_PORT')}, dial string {pbx.get('DIALERD_PBX_ENDPOINT')}")

        step("Starting dialerd with a fresh database")
        # Only our settings reach dialerd: a DIALERD_* variable left in the shell must not change the demo.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
        env.update(pbx)
        env.update({
            # Our own Stasis app name: one websocket per app, and other dialerds may share this Asterisk.
            "DIALERD_ARI_APP": f"dialerd-demo-{os.getpid()}",
            "DIALERD_PBX_DRIVER": args.driver,
            "DIALERD_LOG_FORMAT": "text",
            "DIALERD_LOG_LEVEL": "info",
        })
        daemon = Dialerd(args.state_dir.resolve(), env)
        daemon.reset()
        key = daemon.cli("keys", "create", "--tenant", TENANT, "--concurrent-max", "10", "--calls-per-minute", "120",
                         "--label", "examples/demo.py").strip().splitlines()[-1]
        print(f"API key for tenant {TENANT!r} (concurrent_max 10, 120 calls/min): {key}")
        daemon.start()
        print(f"dialerd serve --port {daemon.port} (pid {daemon.proc.pid if daemon.proc else '?'}, driver "
              f"{args.driver}); its log: {daemon.log}")

        remaining = max(1.0, args.timeout - (time.monotonic() - began))
        try:
            summary = asyncio.run(asyncio.wait_for(run_campaign(daemon, key, args), remaining))
        except TimeoutError:
            raise DemoError(f"gave up after {args.timeout:.0f} s (--timeout) before the campaign ended; "
                            f"dialerd's log: {daemon.log}") from None
        summary["wall_seconds"] = round(time.monotonic() - began, 1)

        if args.keep_running:
            print_keep_running(daemon, key, summary["campaign_id"])
            summary["daemon_exit"] = None
            daemon = None
        else:
            step("Stopping dialerd (SIGTERM)")
            code = daemon.stop()
            if code != 0:
                raise DemoError(f"dialerd exited {code} after SIGTERM, not 0; the end of {daemon.log}:\n"
                                f"{daemon.log_tail()}")
            print(f"dialerd exited 0. Demo finished in {summary['wall_seconds']:.1f} s.")
            summary["daemon_exit"] = code
        print("SUMMARY " + json.dumps(summary, separators=(",", ":")), flush=True)
        return 0
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if daemon is not None and daemon.exited() is None:
            print("stopping dialerd (SIGTERM; it lets calls in flight finish first)", file=sys.stderr, flush=True)
            daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
