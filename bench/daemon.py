"""dialerd as a subprocess for the benchmarks: its CPU and memory are then its own (/proc/<pid>)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.stats import cpu_seconds, main_thread_cpu_seconds, mem_kb

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pstats_report(path: Path, top: int = 18) -> str:
    """The top functions by own CPU time, and dialerd's by cumulative time, as markdown lists."""
    import io
    import pstats

    stats = pstats.Stats(str(path), stream=io.StringIO())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
            if marker in file:
                file = file.split(marker, 1)[1]
        return f"{file}:{line}({func})"

    by_self = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    by_cum = sorted(((k, v) for k, v in entries.items() if "dialerd/" in k[0]), key=lambda kv: kv[1][3],
                    reverse=True)[:top]
    lines = [f"{total:.2f} s of event-loop CPU profiled. Own time (tottime), % of it:", ""]
    lines += [f"- {100 * v[2] / total:4.1f} % `{name(k)}` ({v[1]} calls)" for k, v in by_self]
    lines += ["", "dialerd functions by cumulative time (includes what they call), % of it:", ""]
    lines += [f"- {100 * v[3] / total:4.1f} % `{name(k)}`" for k, v in by_cum]
    return "\n".join(lines)


class DaemonProcess:
    """``python -m bench.serve`` on a free loopback port, logging (JSON, info: production's) to a file."""

    def __init__(self, env: dict[str, str], workdir: Path, *, fake_scale: float | None = None,
                 sample: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"daemon-{self.port}.log"
        self.sample_dir = workdir / f"profiles-{self.port}" if sample else None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DIALERD_")}
        self.env.update(env)
        self.env.update({"DIALERD_SERVER_PORT": str(self.port), "DIALERD_SERVER_HOST": "127.0.0.1",
                         "PYTHONUNBUFFERED": "1"})
        self.env.setdefault("DIALERD_LOG_LEVEL", "info")
        self.env.setdefault("DIALERD_LOG_FORMAT", "json")
        self.fake_scale = fake_scale
        self.proc: subprocess.Popen[bytes] | None = None
        self._dumps = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, limit_s: float = 40.0) -> float:
        """Spawn and wait until /health says the database and the PBX are up; returns the seconds taken."""
        args = [sys.executable, "-m", "bench.serve"]
        if self.fake_scale is not None:
            args += ["--fake-scale", str(self.fake_scale)]
        if self.sample_dir is not None:
            self.sample_dir.mkdir(parents=True, exist_ok=True)
            args += ["--sample", str(self.sample_dir)]
        started = time.perf_counter()
        self.proc = self._spawn(args)
        deadline = started + limit_s
        async with aiohttp.ClientSession() as session:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log_path}")
                try:
                    async with session.get(self.base + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        body = await r.json()
                        if r.status == 200 and body["pbx"]["connected"]:
                            return time.perf_counter() - started
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError(f"daemon not healthy within {limit_s}s; see {self.log_path}")

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def main_cpu(self) -> float:
        return main_thread_cpu_seconds(self.pid)

    def mem(self) -> dict[str, int]:
        return mem_kb(self.pid)

    async def profile(self) -> dict[str, Any] | None:
        """What the sampler saw since the previous call (the first call just starts the window)."""
        if self.sample_dir is None or self.proc is None:
            return None
        self._dumps += 1
        path = self.sample_dir / f"profile-{self._dumps}.json"
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(200):
            if path.exists():
                import json

                data: dict[str, Any] = json.loads(path.read_text())
                return data
            await asyncio.sleep(0.01)
        return None

    async def cprofile(self) -> str | None:
        """Toggle cProfile in the daemon; on the stop toggle, return its report (CPU time, event loop)."""
        if self.sample_dir is None or self.proc is None:
            return None
        self._cprofiles = getattr(self, "_cprofiles", 0)
        self.proc.send_signal(signal.SIGUSR2)
        self._cprofile_on = not getattr(self, "_cprofile_on", False)
        if self._cprofile_on:
            return None
        self._cprofiles += 1
        path = self.sample_dir / f"cprofile-{self._cprofiles}.pstats"
        for _ in range(300):
            if path.exists():
                await asyncio.sleep(0.2)  # dump_stats may still be writing
                return pstats_report(path)
            await asyncio.sleep(0.02)
        return None

    async def stop(self, limit_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(int(limit_s / 0.05)):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        self.proc.kill()
        self.proc.wait(5)
        return self.proc.returncode
