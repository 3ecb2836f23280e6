"""Failpoints for fault-injection tests: the daemon kills itself (SIGKILL) at a named point.

A point in ``RAISES`` raises :class:`FailpointError` instead, in whatever task passes it.

``DIALERD_FAILPOINTS="after_attempt:3,after_originate:1"`` kills the process the 3rd time the dispatcher
passes ``after_attempt``, or the 1st time it passes ``after_originate``, whichever comes first.
``after_attempt:3:stop`` stops it instead (SIGSTOP: a stall, as a frozen VM or a long pause is); whoever
sends SIGCONT resumes it there, and the point is spent. Unset (production), every check is a dictionary
miss. Read once in the composition root.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({
    "before_attempt",  # a due contact was picked; nothing written yet
    "after_attempt",  # the attempt row is committed; the originate request has not left
    "after_originate",  # Asterisk accepted the originate; 'originated' not yet recorded
    "before_answer_write",  # an answer event arrived; not yet recorded
    "before_end_write",  # a hangup event arrived; its outcome not yet recorded
    "recover_crash",  # raises (instead of killing): the critical ``recover`` task crashes once the PBX is up
})
RAISES = frozenset({"recover_crash"})  # these raise FailpointError in the task that passes them


class FailpointError(RuntimeError):
    """Raised by a failpoint in RAISES: an injected crash of the task that passed it."""


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self._left: dict[str, int] = {}
        self._stop: set[str] = set()  # these stop the process (SIGSTOP) rather than kill it
        for item in filter(None, (p.strip() for p in spec.split(","))):
            name, _, rest = item.partition(":")
            count, _, action = rest.partition(":")
            if name not in POINTS:
                raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(sorted(POINTS))}")
            if action not in ("", "kill", "stop"):
                raise ValueError(f"failpoint {name}: unknown action {action!r} (kill or stop)")
            self._left[name] = int(count or "1")
            if action == "stop":
                self._stop.add(name)

    def hit(self, name: str) -> None:
        left = self._left.get(name)
        if left is None:
            return
        if left <= 1:
            if name in RAISES:
                del self._left[name]
                raise FailpointError(f"failpoint {name} hit")
            if name in self._stop:
                del self._left[name]
                os.kill(os.getpid(), signal.SIGSTOP)  # returns once someone sends SIGCONT
                return
            os.kill(os.getpid(), signal.SIGKILL)
        self._left[name] = left - 1
