"""The cyclic garbage collector's share of the event loop: keep its full passes short.

A full (generation 2) collection walks every container object in the process, on the event-loop thread,
with nothing else running meanwhile. Its length therefore grows with the whole heap, not with what the
daemon is doing: load test (tests/load, issue 9 item 12) run after the rest of ``make test`` in one
process, 717,000 objects (330 MiB) left by the earlier tests and the libraries: each full pass took
0.58 s of CPU (up to 2.3 s of wall time on a loaded 2-core box) and was the event loop's longest stall:
on a quiet box, the only callback over 100 ms during the load was a 0.59 s one that held a 0.50 s pass. In ``dialerd serve`` the same holds for the libraries' own
objects (SQLAlchemy, aiohttp, phonenumbers: ~85,000 at start), walked again by every full pass.

Nearly all of those objects live as long as the process. ``gc.freeze()`` moves them to the collector's
permanent generation, so full passes walk only what was allocated since (live campaigns, streams,
requests): after the same earlier tests, the load test's longest full pass fell from 0.59 s to 38 ms and
its longest loop stall from 0.58 s to 12 ms (docs/reliability.md, section 7).
Reference counting still frees frozen objects; only garbage *cycles* among them wait, until the last
daemon of the process stops and ``release`` hands them back to the collector (several in-process
daemons in tests, each freezing at start). Nothing is collected before freezing: a full pass over a big
test process costs as much as the stall it avoids, at every daemon start.
"""

from __future__ import annotations

import gc

_holders = 0  # daemons of this process running with the heap frozen


def freeze() -> None:
    """Move every object alive now out of the collector's full passes (call once the daemon is up)."""
    global _holders
    _holders += 1
    gc.freeze()


def release() -> None:
    """Undo ``freeze`` once no daemon of this process needs it (at stop)."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        gc.unfreeze()
