"""The daemon as the benchmarks run it: ``dialerd serve``, plus two bench-only options.

``--fake-scale S`` swaps in the in-package FakePbx with ``time_scale=S`` (isolates dialerd from
Asterisk); ``--sample DIR`` runs the sampling profiler, and each SIGUSR1 writes what it sampled since the
previous one to ``DIR/profile-N.json``, and
SIGUSR2 starts/stops cProfile (``DIR/cprofile-N.pstats``). Settings come from the ``DIALERD_*`` environment as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import signal
import sys
import time
from pathlib import Path

from bench.sampler import StackSampler
from dialerd.daemon import Daemon
from dialerd.logs import setup_logging
from dialerd.ports import Pbx
from dialerd.settings import load_settings


async def _serve(fake_scale: float | None, sample_dir: Path | None) -> int:
    settings = load_settings(None)
    pbx: Pbx | None = None
    if fake_scale is not None:
        from dialerd.pbx.fake import FakePbx

        pbx = FakePbx(time_scale=fake_scale)
    daemon = await Daemon.build(settings, pbx=pbx)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    sampler: StackSampler | None = None
    if sample_dir is not None:
        sampler = StackSampler()
        dumps = iter(range(1, 1_000_000))
        # The dump runs on the loop thread between callbacks, never inside a request handler.
        loop.add_signal_handler(signal.SIGUSR1, lambda: sampler.dump(sample_dir / f"profile-{next(dumps)}.json"))
        sampler.start()
    if sample_dir is not None:
        # SIGUSR2 toggles cProfile on the event-loop thread (timer: that thread's CPU time): unbiased
        # where CPU goes, at ~2x the cost while on; used for one dedicated run only.
        profiler: list[cProfile.Profile] = []
        dumps2 = iter(range(1, 1_000_000))

        def toggle() -> None:
            if not profiler:
                profiler.append(cProfile.Profile(time.thread_time))
                profiler[0].enable()
                return
            prof = profiler.pop()
            prof.disable()
            prof.dump_stats(sample_dir / f"cprofile-{next(dumps2)}.pstats")

        loop.add_signal_handler(signal.SIGUSR2, toggle)
    try:
        await daemon.start()
        await daemon.wait()
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()
        if sampler is not None:
            sampler.stop()
    return 0 if daemon.stop_requested else 1


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve")
    p.add_argument("--fake-scale", type=float, default=None)
    p.add_argument("--sample", type=Path, default=None)
    args = p.parse_args()
    if "BENCH_SWITCH_INTERVAL" in os.environ:  # experiments only: how much is GIL hand-over?
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    settings = load_settings(None)
    setup_logging(settings.log_level, settings.log_format)
    return asyncio.run(_serve(args.fake_scale, args.sample))


if __name__ == "__main__":
    raise SystemExit(main())
