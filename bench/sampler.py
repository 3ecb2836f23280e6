"""A sampling profiler for a daemon under load: py-spy's idea on the standard library.

A daemon thread reads every thread's current Python stack (``sys._current_frames``) every ``interval``
seconds and counts, per function, the samples in which it was running (self) or on the stack
(inclusive). Cost: about 20-50 us of GIL time per sample, so ~0.3 % at 100 Hz. Unlike cProfile it does
not slow every call, so the throughput and latency figures measured meanwhile stay honest.

Samples whose leaf is a wait (the event loop's selector, a thread blocked on a queue) are counted as
idle, so the report shows where the *busy* time goes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

_IDLE_LEAVES = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("queue.py", "get"),
    ("sampler.py", "_run"),
}


def _key(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno}({code.co_name})"


class StackSampler:
    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._reset()

    def _reset(self) -> None:
        self.samples = 0
        self.busy: Counter[str] = Counter()  # thread name -> busy samples
        self.idle: Counter[str] = Counter()
        self.self_counts: Counter[str] = Counter()
        self.incl_counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            frames = sys._current_frames()
            with self._lock:
                self.samples += 1
                for ident, frame in frames.items():
                    if ident == me:
                        continue
                    name = names.get(ident, "?")
                    name = "MainThread" if name == "MainThread" else "worker threads"
                    code = frame.f_code
                    if (code.co_filename.rsplit("/", 1)[-1], code.co_name) in _IDLE_LEAVES:
                        self.idle[name] += 1
                        continue
                    self.busy[name] += 1
                    self.self_counts[f"[{name}] {_key(frame)}"] += 1
                    seen: set[str] = set()
                    f: FrameType | None = frame
                    while f is not None:
                        k = f"[{name}] {_key(f)}"
                        if k not in seen:
                            seen.add(k)
                            self.incl_counts[k] += 1
                        f = f.f_back

    def snapshot(self, top: int = 25) -> dict[str, Any]:
        with self._lock:
            out = {
                "seconds": round(time.monotonic() - self.started, 3),
                "samples": self.samples,
                "interval": self.interval,
                "busy": dict(self.busy),
                "idle": dict(self.idle),
                "self": self.self_counts.most_common(top),
                "inclusive": self.incl_counts.most_common(top * 2),
            }
            self._reset()
        return out

    def dump(self, path: Path) -> None:
        """Write what was sampled since the last dump to ``path`` and start counting afresh."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        tmp.replace(path)
