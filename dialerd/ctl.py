"""``dialerctl``: drive a dialerd daemon over its REST API from the shell (on the blocking client).

    dialerctl campaigns create contacts.csv --name spring --default-region US
    dialerctl campaigns start cmp_...          # also: get, delete, pause, resume, stop
    dialerctl campaigns watch cmp_...          # live view; one line per event when not on a terminal
    dialerctl campaigns contacts cmp_... --status failed --csv --output failed.csv
    dialerctl campaigns list

Every ``campaigns`` subcommand is also a top-level command (``dialerctl watch ID``). ``--url`` and
``--api-key`` override ``DIALERD_URL`` and ``DIALERD_API_KEY``. Exit status: 0 done, 1 the daemon refused
or could not be reached (message and error_id on stderr), 2 bad usage, 130 interrupted.

CSV exports are safe to open in a spreadsheet: a cell starting with ``= + - @``, a tab or a carriage
return (or their full-width forms) gets a leading ``'`` so it is never evaluated as a formula. This
applies to E.164 numbers too (``'+14155550100``): strip one leading ``'`` to get the number back.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from dialerd.client import (
    CampaignEvent,
    ContactEvent,
    Dialerd,
    DialerdApiError,
    DialerdConnectionError,
    End,
    Event,
    Snapshot,
)
from dialerd.client.models import Campaign, Contact

STATUSES = ("pending", "originated", "connected", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
CONTACT_COLUMNS = (
    "id", "phone_number", "raw_number", "line", "status", "attempts", "last_attempt_at", "next_attempt_at",
    "failure_reason", "hangup_cause", "sip_code", "updated_at",
)  # fmt: skip
# A contact's first transition we see tells us where it came from (a snapshot corrects any guess).
PREVIOUS = {
    "originated": "pending", "connected": "originated", "completed": "connected", "failed": "originated",
    "pending": "originated", "cancelled": "pending",
}  # fmt: skip


class UsageError(Exception):
    """A problem with the command line or a local file: exit 2."""


# ---- formatting ------------------------------------------------------------------------------------


def safe_cell(value: object) -> str:
    """One CSV cell that a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


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
    if tty:
        with TerminalView(out) as view:
            view.draw(state, force=True)
            for ev in stream:
                state.apply(ev)
                view.draw(state, force=not isinstance(ev, ContactEvent))
            state.refresh(client.campaigns.get(args.id))
            view.draw(state, force=True)
    else:
        for ev in stream:
            line = event_line(ev)
            if line is not None:
                print(line, file=out, flush=True)
        state.refresh(client.campaigns.get(args.id))
    print(f"final status={state.status} total={state.total} {counts_text(state.counts)}", file=out, flush=True)
    return 0


# ---- the other commands ---------------------------------------------------------------------------


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=False), file=out)


def _report(campaign: Campaign, out: TextIO) -> None:
    report: dict[str, Any] = dict(campaign.get("import") or {})
    print(
        f"created campaign {campaign['name']!r} ({campaign['status']}): {report.get('contacts', 0)} contacts "
        f"from {report.get('rows_total', 0)} rows; {report.get('rows_rejected', 0)} rejected, "
        f"{report.get('duplicates', 0)} duplicates",
        file=out,
    )
    problems = report.get("problems") or []
    if problems:
        print("rejected rows:", file=out)
        for p in problems:
            print(f"  line {p.get('line')}: {p.get('value')!r}: {p.get('reason')} ({p.get('code')})", file=out)
        if report.get("problems_truncated"):
            print(f"  ... {report.get('rows_rejected', 0) - len(problems)} more not listed", file=out)


def create(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    if not os.path.isfile(args.contacts):
        raise UsageError(f"contacts file {args.contacts!r} does not exist or is not a file")
    campaign = client.campaigns.create(
        args.contacts,
        name=args.name,
        caller_id=args.caller_id,
        destination=args.destination,
        max_concurrent_calls=args.max_concurrent_calls,
        retries_per_contact=args.retries,
        retry_delay_seconds=args.retry_delay,
        ring_timeout_seconds=args.ring_timeout,
        scheduled_at=args.scheduled_at,
        default_region=args.default_region,
    )
    if args.json:
        _print_json(campaign, out)
        return 0
    print(campaign["id"], file=out)  # first line alone: ID=$(dialerctl campaigns create ... | head -n1)
    _report(campaign, out)
    return 0


def list_campaigns(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    page = client.campaigns.list(status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        _print_json(page, out)
        return 0
    rows = [("ID", "NAME", "STATUS", "CONTACTS", "PROGRESS", "CREATED")]
    for c in page["campaigns"]:
        rows.append(
            (
                c["id"],
                c["name"],
                c["status"],
                str(c["contacts"]["total"]),
                f"{c['progress']:.0%}",
                c["created_at"] or "",
            )
        )
    _table(rows, out)
    shown = len(page["campaigns"])
    if shown < page["total"]:
        print(f"({shown} of {page['total']} from offset {page['offset']}; use --limit/--offset)", file=out)
    return 0


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(), file=out)


def show(campaign: Campaign, out: TextIO) -> None:
    counts = counts_of(campaign)
    fields = [
        ("id", campaign["id"]),
        ("name", campaign["name"]),
        ("status", campaign["status"]),
        ("contacts", f"total={counts.get('total', 0)} {counts_text(counts)}"),
        ("progress", f"{campaign['progress']:.0%}"),
        ("calls in flight", campaign["calls_in_flight"]),
        ("caller id", campaign["caller_id"] or "-"),
        ("destination", campaign["destination"]),
        ("max concurrent calls", campaign["max_concurrent_calls"]),
        ("retries per contact", campaign["retries_per_contact"]),
        ("retry delay", f"{campaign['retry_delay_seconds']} s"),
        ("ring timeout", f"{campaign['ring_timeout_seconds']} s"),
        ("scheduled at", campaign["scheduled_at"] or "-"),
        ("created at", campaign["created_at"] or "-"),
        ("started at", campaign["started_at"] or "-"),
        ("completed at", campaign["completed_at"] or "-"),
    ]
    for key, value in fields:
        print(f"{key:<22}{value}", file=out)


def get(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    campaign = client.campaigns.get(args.id)
    if args.json:
        _print_json(campaign, out)
    else:
        show(campaign, out)
    return 0


def delete(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    client.campaigns.delete(args.id)
    print(f"deleted {args.id}", file=out)
    return 0


def action(name: str) -> Callable[[Dialerd, argparse.Namespace, TextIO], int]:
    def run(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
        campaign: Campaign = getattr(client.campaigns, name)(args.id)
        if args.json:
            _print_json(campaign, out)
        else:
            print(f"{campaign['id']} {campaign['status']}", file=out)
        return 0

    return run


def csv_header(custom: list[str]) -> list[str]:
    taken = set(CONTACT_COLUMNS)
    return [safe_cell(c) for c in CONTACT_COLUMNS] + [
        safe_cell(f"custom.{f}" if f in taken else f) for f in custom
    ]


def csv_row(contact: Contact, custom: list[str]) -> list[str]:
    row: dict[str, Any] = dict(contact)
    fields = contact.get("custom_fields") or {}
    return [safe_cell(row.get(c)) for c in CONTACT_COLUMNS] + [safe_cell(fields.get(f)) for f in custom]


def _write_contacts(items: Iterable[Contact], args: argparse.Namespace, custom: list[str], target: TextIO) -> int:
    count = 0
    if args.csv:
        # Every cell quoted as well as neutralised (OWASP's advice for CSV injection).
        writer = csv.writer(target, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(csv_header(custom))
        for c in items:
            writer.writerow(csv_row(c, custom))
            count += 1
        return count
    for c in items:
        count += 1
        if args.json:
            target.write(json.dumps(c, separators=(",", ":")) + "\n")
            continue
        reason = c["failure_reason"] or "-"
        cause = "-" if c["hangup_cause"] is None else str(c["hangup_cause"])
        sip = "-" if c["sip_code"] is None else str(c["sip_code"])
        target.write(
            f"{c['id']:>8}  {c['phone_number']:<16} {c['status']:<10} attempts={c['attempts']} "
            f"reason={reason} cause={cause} sip={sip}\n"
        )
    return count


def contacts(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    campaign = client.campaigns.get(args.id)  # a 404 before anything is written
    custom = list((campaign.get("import") or {}).get("custom_fields") or [])
    items = client.campaigns.iter_contacts(args.id, status=args.status)
    if not args.output:
        _write_contacts(items, args, custom, out)
        return 0
    # Written aside and renamed at the end: a failure half-way never leaves a truncated export behind.
    partial = f"{args.output}.partial"
    try:
        with open(partial, "w", newline="", encoding="utf-8") as target:
            count = _write_contacts(items, args, custom, target)
        os.replace(partial, args.output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    print(f"exported {count} contacts to {args.output}", file=sys.stderr)
    return 0


# ---- the command line ---------------------------------------------------------------------------------

Command = Callable[[Dialerd, argparse.Namespace, TextIO], int]


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On the top parser and on every subcommand; SUPPRESS keeps a subcommand from resetting a value
    # given before it.
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument("--url", default=default, help="dialerd base URL (default: $DIALERD_URL)")
    parser.add_argument("--api-key", default=default, help="API key (default: $DIALERD_API_KEY)")
    parser.add_argument(
        "--timeout", type=float, default=30.0 if top else argparse.SUPPRESS, help="seconds per request"
    )


def _campaign_commands(sub: Any, include_group_only: bool) -> None:
    def add(
        name: str, run: Command, help_text: str, *, takes_id: bool = True, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _connection_options(p, top=False)
        if takes_id:
            p.add_argument("id", help="campaign id (cmp_...)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
        p.set_defaults(run=run)
        return p

    if include_group_only:
        p = add("list", list_campaigns, "list campaigns", takes_id=False)
        p.add_argument("--status", help="only campaigns in this status")
        p.add_argument("--limit", type=int, help="page size (daemon default 50)")
        p.add_argument("--offset", type=int, help="skip this many")
        p = add("create", create, "create a draft campaign from a contacts CSV", takes_id=False)
        p.add_argument("contacts", help="CSV file with a phone_number column")
        p.add_argument("--name", required=True)
        p.add_argument("--caller-id")
        p.add_argument("--destination", help="context,extension or stasis:app (default: daemon config)")
        p.add_argument("--max-concurrent-calls", type=int)
        p.add_argument("--retries", type=int, help="retries per contact (0-5)")
        p.add_argument("--retry-delay", type=int, help="seconds between attempts (>= 60)")
        p.add_argument("--ring-timeout", type=int, help="seconds to let a call ring")
        p.add_argument("--scheduled-at", help="RFC 3339 time to start, e.g. 2030-01-31T09:00:00Z")
        p.add_argument("--default-region", help="ISO country for national numbers, e.g. US")
    add("get", get, "show a campaign")
    add("delete", delete, "delete a campaign (not while running)", json_flag=False)
    for name, text in (("start", "start"), ("pause", "pause"), ("resume", "resume"), ("stop", "stop for good")):
        add(name, action(name), f"{text} a campaign")
    p = add("watch", watch, "follow a campaign live until it ends", json_flag=False)
    p.add_argument("--from-start", action="store_true", help="replay every event from the beginning first")
    p.add_argument("--last-event-id", type=int, help="resume after this event id")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tty", dest="tty", action="store_true", default=None, help="force the live view")
    mode.add_argument("--lines", dest="tty", action="store_false", help="force one line per event")
    p = add("contacts", contacts, "export a campaign's contacts (all pages)", json_flag=False)
    p.add_argument("--status", help="only contacts in this status (e.g. failed)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV with formula-safe cells")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialerctl", description="Drive a dialerd daemon over its REST API.",
        epilog="Exit status: 0 ok, 1 API or connection error, 2 usage, 130 interrupted.",
    )  # fmt: skip
    _connection_options(parser, top=True)
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    group = top.add_parser("campaigns", help="campaign commands", description="campaign commands")
    _campaign_commands(group.add_subparsers(dest="action", required=True, metavar="ACTION"), True)
    _campaign_commands(top, False)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = out or sys.stdout
    try:
        client = Dialerd(args.url, args.api_key, timeout=args.timeout)
        code: int = args.run(client, args, stdout)
        return code
    except DialerdApiError as exc:
        print(f"dialerctl: {exc.message} (error_id: {exc.error_id}, HTTP {exc.status})", file=sys.stderr)
        if exc.details:
            print(f"dialerctl: details: {json.dumps(exc.details, sort_keys=True)}", file=sys.stderr)
        return 1
    except DialerdConnectionError as exc:
        print(f"dialerctl: {exc} (error_id: connection_error)", file=sys.stderr)
        return 1
    except (UsageError, ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader (e.g. `| head`) went away: not an error; keep Python from complaining at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        parser.print_usage(sys.stderr)
        print(f"dialerctl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndialerctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
