"""The live view of ``dialerctl watch``: a campaign's SSE stream as a terminal dashboard or one line per event.

On a terminal it redraws a progress bar, the outcome counts and the latest transitions in place; otherwise
(a pipe, a log file) it prints one line per event. Used by ``dialerd/ctl.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TextIO

from dialerd.client import (
    CampaignEvent,
    ContactEvent,
    Dialerd,
    End,
    Event,
    Snapshot,
)
from dialerd.client.models import Campaign, Explanation

STATUSES = ("pending", "originated", "connected", "completed", "failed", "cancelled", "skipped")
FINAL = ("completed", "failed", "cancelled", "skipped")
# A contact's first transition we see tells us where it came from (a snapshot corrects any guess).
PREVIOUS = {
    "originated": "pending", "connected": "originated", "completed": "connected", "failed": "originated",
    "pending": "originated", "cancelled": "pending", "skipped": "pending",
}  # fmt: skip

EXPLAIN_EVERY = 3.0  # seconds: watch asks why nothing dials at most this often


def counts_of(campaign: Campaign) -> dict[str, int]:
    counts: Mapping[str, object] = campaign["contacts"]
    return {k: v for k, v in counts.items() if isinstance(v, int)}


def counts_text(counts: Mapping[str, int], sep: str = " ") -> str:
    return sep.join(f"{s}={counts.get(s, 0)}" for s in STATUSES)


def clock(at: str | None) -> str:
    when = datetime.now().astimezone()
    if at:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone()
    return f"{when:%H:%M:%S}.{when.microsecond // 1000:03d}"


def transition_details(ev: ContactEvent) -> str:
    parts = [f"contact={ev.contact_id}", f"attempt={ev.attempt if ev.attempt is not None else '-'}"]
    if ev.reason:
        parts.append(f"reason={ev.reason}")
    if ev.cause is not None:
        parts.append(f"cause={ev.cause}")
    if ev.sip_code is not None:
        parts.append(f"sip={ev.sip_code}")
    talk = ev.data.get("talk_seconds")
    if isinstance(talk, int | float):
        parts.append(f"talk={talk:.1f}s")
    retry_at = ev.data.get("retry_at")
    if retry_at:
        parts.append(f"retry_at={retry_at}")
    return " ".join(parts)


def event_line(ev: Event) -> str | None:
    """The one-line form of an event (non-terminal output)."""
    if isinstance(ev, ContactEvent):
        return f"{clock(ev.at)} {ev.status:<10} {ev.phone_number or '?':<16} {transition_details(ev)}"
    if isinstance(ev, Snapshot):
        c = ev.contacts
        done = sum(c.get(s, 0) for s in FINAL)
        return (
            f"{clock(ev.data.get('at'))} {'snapshot':<10} status={ev.status} final={done}/{c.get('total', 0)} "
            f"in_flight={ev.calls_in_flight} {counts_text(c)}"
        )
    if isinstance(ev, CampaignEvent):
        at = ev.data.get("at")
        return f"{clock(at if isinstance(at, str) else None)} {'campaign':<10} {ev.previous} -> {ev.status} action={ev.action}"
    if isinstance(ev, End):
        return f"{clock(None)} {'end':<10} status={ev.status}"
    return None


# ---- explain -----------------------------------------------------------------------------------------


def _detail_text(detail: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in detail.items() if v is not None)


def explain_headline(answer: Explanation) -> str:
    doing = "dialling" if answer["dialling"] else "not dialling"
    return (f"{answer['campaign_id']} {answer['status']}: {doing}; {answer['pending']} pending, "
            f"{answer['eligible_now']} eligible now")


def blocker_line(b: Mapping[str, Any]) -> str:
    """One reason: its name, the contacts it holds back (per-contact reasons), when it lifts, its figures."""
    parts = [f"{b['reason']:<22}"]
    if "contacts" in b:
        parts.append(f"{b['contacts']} contacts")
    if b.get("next_at"):
        parts.append(f"until {b['next_at']}")
    detail = _detail_text(b.get("detail") or {})
    if detail:
        parts.append(f"({detail})")
    return " ".join(parts).rstrip()


def explain_lines(answer: Explanation) -> list[str]:
    """``dialerctl explain``: the headline, then one line per reason, in the daemon's order."""
    return [explain_headline(answer), *(f"  {blocker_line(b)}" for b in answer["blocked_by"])]


def explain_summary(answer: Explanation) -> str:
    """One line for watch: why a running campaign places no call."""
    reasons = ", ".join(
        b["reason"] + (f" {b['contacts']}" if "contacts" in b else "")
        + (f" until {b['next_at']}" if b.get("next_at") else "")
        for b in answer["blocked_by"]
    )
    return f"not dialling: {reasons or 'no reason given'} (pending {answer['pending']}, eligible {answer['eligible_now']})"


class WhyIdle:
    """Asks explain, at most every ``every`` seconds, while the watched campaign runs with no call up."""

    def __init__(self, ask: Callable[[], Explanation], every: float = EXPLAIN_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ask = ask
        self.every = every
        self.clock = clock
        self.asked = float("-inf")
        self.summary: str | None = None

    def update(self, status: str, in_flight: int) -> str | None:
        """The summary to show now (None: it is dialling, or not running); asks again when due."""
        if status != "running" or in_flight > 0:
            self.summary = None
            return None
        now = self.clock()
        if now - self.asked >= self.every:
            self.asked = now
            answer = self.ask()
            # Its own status, not the stream's: a replay (--from-start) shows "running" long after the end.
            idle = answer["status"] == "running" and not answer["dialling"]
            self.summary = explain_summary(answer) if idle else None
        return self.summary


# ---- watch -------------------------------------------------------------------------------------------


class WatchState:
    """What the live view shows, kept up to date from events; snapshots resynchronise the counts."""

    def __init__(self, campaign: Campaign, *, replay: bool = False, recent: int = 8) -> None:
        """``replay``: the stream will start from the first event, so count from where the campaign began."""
        self.id = campaign["id"]
        self.name = campaign["name"]
        self.status = campaign["status"]
        self.counts = counts_of(campaign)
        if replay:
            self.counts = {"total": self.total, "pending": self.total}
            self.status = "draft"
        self.in_flight = 0 if replay else campaign.get("calls_in_flight", 0)
        self.recent: deque[str] = deque(maxlen=recent)
        self._last: dict[int, str] = {}
        self.why: str | None = None  # explain's summary while it runs with nothing dialling

    def refresh(self, campaign: Campaign) -> None:
        """Take the daemon's authoritative figures (after the stream ended)."""
        self.status = campaign["status"]
        self.counts = counts_of(campaign)
        self.in_flight = campaign.get("calls_in_flight", 0)

    @property
    def total(self) -> int:
        return self.counts.get("total", 0)

    @property
    def final(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL)

    def apply(self, ev: Event) -> None:
        if isinstance(ev, Snapshot):
            self.status = ev.status or self.status
            self.counts = dict(ev.contacts) or self.counts
            self.in_flight = ev.calls_in_flight
        elif isinstance(ev, CampaignEvent | End):
            self.status = ev.status
        elif isinstance(ev, ContactEvent):
            before = self._last.get(ev.contact_id) or PREVIOUS.get(ev.status)
            if before != ev.status:
                if before is not None and self.counts.get(before, 0) > 0:
                    self.counts[before] -= 1
                self.counts[ev.status] = self.counts.get(ev.status, 0) + 1
            self._last[ev.contact_id] = ev.status
            self.in_flight = self.counts.get("originated", 0) + self.counts.get("connected", 0)
            self.recent.append(
                f"{clock(ev.at)[:8]} {ev.status:<10} {ev.phone_number or '?':<16} {transition_details(ev)}"
            )

    def lines(self, width: int, color: bool) -> list[str]:
        def paint(code: str, text: str) -> str:
            return f"\x1b[{code}m{text}\x1b[0m" if color else text

        total, final = self.total, self.final
        share = min(1.0, final / total) if total else 0.0
        bar_width = max(10, min(50, width - 30))
        filled = round(bar_width * share)
        bar = "#" * filled + "." * (bar_width - filled)
        shades = {"completed": "32", "failed": "31", "cancelled": "90", "originated": "33", "connected": "36"}
        counts = "  ".join(paint(shades.get(s, "0"), f"{s} {self.counts.get(s, 0)}") for s in STATUSES)
        out = [
            f"campaign {self.name} ({self.id})  {paint('1', self.status)}",
            f"[{bar}] {final}/{total} final  {share:.0%}",
            counts,
            f"calls in flight {self.in_flight}",
            *([paint("33", self.why)] if self.why else []),
            "recent transitions:",
            *(f"  {line}" for line in self.recent),
        ]
        # Never let a line wrap: the redraw moves the cursor up by the number of lines it printed.
        return [_clip(line, width) for line in out]


def _clip(line: str, width: int) -> str:
    visible = 0
    out: list[str] = []
    escape = False
    for ch in line:
        if ch == "\x1b":
            escape = True
        if not escape:
            if visible >= width - 1:
                break
            visible += 1
        out.append(ch)
        if escape and ch == "m":
            escape = False
    return "".join(out) + ("\x1b[0m" if "\x1b[" in line else "")


class TerminalView:
    """Redraws the state in place with ANSI escapes (no curses), at most ``fps`` times a second."""

    def __init__(self, out: TextIO, fps: float = 10.0) -> None:
        self.out = out
        self.interval = 1.0 / fps
        self.drawn = 0
        self.last = 0.0
        self.color = "NO_COLOR" not in os.environ

    def __enter__(self) -> TerminalView:
        self.out.write("\x1b[?25l")  # hide the cursor while redrawing
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.write("\x1b[?25h")
        self.out.flush()

    def draw(self, state: WatchState, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        width = shutil.get_terminal_size((100, 24)).columns
        lines = state.lines(width, self.color)
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)


def watch(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    campaign = client.campaigns.get(args.id)
    last_id = 0 if args.from_start else args.last_event_id
    state = WatchState(campaign, replay=last_id == 0)
    stream = client.campaigns.events(args.id, last_event_id=last_id)
    tty = out.isatty() if args.tty is None else args.tty
    why = WhyIdle(lambda: client.campaigns.explain(args.id))
    if tty:
        with TerminalView(out) as view:
            state.why = why.update(state.status, state.in_flight)
            view.draw(state, force=True)
            for ev in stream:
                state.apply(ev)
                before, state.why = state.why, why.update(state.status, state.in_flight)
                view.draw(state, force=not isinstance(ev, ContactEvent) or state.why != before)
            state.refresh(client.campaigns.get(args.id))
            state.why = None
            view.draw(state, force=True)
    else:
        shown: str | None = None
        for ev in stream:
            line = event_line(ev)
            if line is not None:
                print(line, file=out, flush=True)
            state.apply(ev)
            summary = why.update(state.status, state.in_flight)
            if summary is not None and summary != shown:  # a line when the reasons change, not every poll
                print(f"{clock(None)} {'explain':<10} {summary}", file=out, flush=True)
            shown = summary
        state.refresh(client.campaigns.get(args.id))
    print(f"final status={state.status} total={state.total} {counts_text(state.counts)}", file=out, flush=True)
    return 0


# ---- the other commands ---------------------------------------------------------------------------

