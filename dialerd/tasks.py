"""One owner for the daemon's background tasks and timers, with one crash policy.

Every task is started through :meth:`TaskOwner.spawn`, which names it and keeps a reference until it ends
(the loop itself keeps only weak ones). The policy, decided at the call site by ``critical``:

* a **critical** task (a campaign runner, the event consumer, ``recover``, the systemd reporters) that
  raises is logged at CRITICAL with ``action: task_crash`` and ``task: <name>``, and the owner's
  ``on_crash`` runs: the composition root stops the daemon, which exits non-zero (systemd restarts it);
* a **non-critical** task (a PBX adapter's helper: a route, a hangup, a reconcile pass) that raises is
  logged at ERROR with the same keys and ``critical: false``; the daemon goes on.

A task that ends by cancellation is not a crash. Timers (:meth:`spawn_later`) are tracked too, so none
fires after :meth:`cancel_all`. A component that closes on its own (a PBX adapter) takes a
:meth:`child`: the same policy, its own set of tasks to cancel, and still cancelled by the root's
:meth:`cancel_all`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("dialerd.tasks")

T = TypeVar("T")
CrashHandler = Callable[[str, BaseException], None]


class TaskOwner:
    def __init__(self, on_crash: CrashHandler | None = None, *, name: str = "dialerd") -> None:
        self.name = name
        self._on_crash = on_crash
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._children: list[TaskOwner] = []
        self.crashed: list[str] = []  # names of the critical tasks that crashed, in order

    # ---- starting ------------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        *,
        critical: bool,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        """Start ``coro`` as the task ``name``; the owner keeps it until it ends and applies the policy."""
        task = asyncio.create_task(coro, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, critical))
        return task

    def spawn_later(
        self,
        name: str,
        delay: float,
        factory: Callable[[], Coroutine[Any, Any, Any]],
        *,
        critical: bool,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """In ``delay`` seconds, spawn ``factory()`` as the task ``name`` (unless cancelled before).

        A factory, not a coroutine: a timer cancelled before it fires then leaves no coroutine unawaited.
        """
        return self.call_later(name, delay, lambda: self.spawn(name, factory(), critical=critical, context=context),
                               critical=critical)

    def call_later(self, name: str, delay: float, callback: Callable[[], object], *,
                   critical: bool) -> asyncio.TimerHandle:
        """In ``delay`` seconds, run the plain ``callback`` (unless cancelled before); it raising is a crash."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            try:
                callback()
            except Exception as exc:
                self._crash(name, exc, critical)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)
        return handle

    def child(self, name: str) -> TaskOwner:
        """An owner with this one's crash policy whose tasks the caller can cancel on their own."""
        sub = TaskOwner(self._on_crash, name=f"{self.name}.{name}")
        sub.crashed = self.crashed  # one record of crashes for the whole daemon
        self._children.append(sub)
        return sub

    # ---- looking ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The names of the live tasks (children's included), sorted: for logs and tests."""
        own = [t.get_name() for t in self._tasks if not t.done()]
        return sorted(own + [n for c in self._children for n in c.names()])

    # ---- stopping --------------------------------------------------------------------------------

    # ASYNC109: ``timeout`` bounds the wait for cancelled tasks, it is not the caller's deadline.
    async def cancel_all(self, timeout: float | None = None) -> list[str]:  # noqa: ASYNC109
        """Cancel every timer and task (children's included) and wait up to ``timeout`` s for them to end.

        Returns the names of the tasks still running after the timeout (they ignored the cancellation);
        they are logged and left to the loop's end.
        """
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        tasks = self._all_tasks()
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        late = sorted(t.get_name() for t in pending)
        if late:
            log.error("tasks did not end when cancelled", extra={"action": "task_cancel_timeout", "tasks": late,
                                                                 "owner": self.name})
        return late

    def _all_tasks(self) -> set[asyncio.Task[Any]]:
        tasks = set(self._tasks)
        for sub in self._children:
            for handle in sub._timers:
                handle.cancel()
            sub._timers.clear()
            tasks |= sub._all_tasks()
        return tasks

    def _done(self, task: asyncio.Task[Any], critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so the loop never reports it as unretrieved
        if exc is not None:
            self._crash(task.get_name(), exc, critical)

    def _crash(self, name: str, exc: BaseException, critical: bool) -> None:
        extra = {"action": "task_crash", "task": name, "critical": critical}
        if not critical:
            log.error("task %s crashed", name, exc_info=exc, extra=extra)
            return
        log.critical("task %s crashed; stopping the daemon", name, exc_info=exc, extra=extra)
        self.crashed.append(name)
        if self._on_crash is not None:
            self._on_crash(name, exc)


def child_of(parent: TaskOwner | None, name: str) -> TaskOwner:
    """``parent.child(name)``, or a stand-alone owner (log-only for lack of ``on_crash``) when there is none:
    adapters built on their own, as in tests, still name and keep their tasks."""
    return parent.child(name) if parent is not None else TaskOwner(name=name)
