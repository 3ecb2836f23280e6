"""``dialerctl``: drive a dialerd daemon over its REST API from the shell (on the blocking client).

    dialerctl campaigns create contacts.csv --name spring --default-region US
    dialerctl campaigns start cmp_...          # also: get, delete, pause, resume, stop
    dialerctl campaigns watch cmp_...          # live view; one line per event when not on a terminal
    dialerctl campaigns contacts cmp_... --status failed --csv --output failed.csv
    dialerctl export cmp_... > results.csv     # the daemon's results CSV: every contact and its outcome
    dialerctl append cmp_... more.csv          # add contacts to a draft, scheduled, paused or running campaign
    dialerctl campaigns list
    dialerctl suppressions add +14155550100 --reason "asked by letter"   # or --file dnc.csv; also list, delete
    dialerctl explain cmp_...                  # why isn't it dialling? one line per reason
    dialerctl update cmp_... --webhook-url https://hooks.example.com/dialerd --webhook-secret-file secret.txt
    dialerctl webhook cmp_...                  # the webhook's delivery state: delivered, pending, dead, last error

Every ``campaigns`` subcommand is also a top-level command (``dialerctl watch ID``). ``--url`` and
``--api-key`` override ``DIALERD_URL`` and ``DIALERD_API_KEY``. Exit status: 0 done, 1 the daemon refused
or could not be reached (message and error_id on stderr), 2 bad usage, 130 interrupted.

CSV exports are safe to open in a spreadsheet: a cell starting with ``= + - @``, a tab or a carriage
return (or their full-width forms) gets a leading ``'`` so it is never evaluated as a formula. A plain
E.164 number (``+14155550100``: ``+`` and digits only) is left as it is: it cannot hold a formula, and
the export stays machine-readable (no ``'`` to strip before re-importing it). The rule is
``dialerd/domain/cells.safe_cell``, the same one the daemon's ``dialerctl export`` CSV is written with.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from dialerd.client import Dialerd, DialerdApiError, DialerdConnectionError
from dialerd.client.models import Campaign, Contact
from dialerd.ctlwatch import counts_of, counts_text, explain_lines, watch
from dialerd.domain.cells import safe_cell as safe_cell  # re-exported: the rule's home is domain/cells.py

CONTACT_COLUMNS = (
    "id", "phone_number", "raw_number", "line", "status", "attempts", "last_attempt_at", "next_attempt_at",
    "failure_reason", "reason", "hangup_cause", "sip_code", "updated_at",
)  # fmt: skip


class UsageError(Exception):
    """A problem with the command line or a local file: exit 2."""


# ---- formatting ------------------------------------------------------------------------------------


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
    _problems(report, out)


def _problems(report: dict[str, Any], out: TextIO) -> None:
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
        caller_id_strategy=args.caller_id_strategy,
        destination=args.destination,
        max_concurrent_calls=args.max_concurrent_calls,
        retries_per_contact=args.retries,
        retry_delay_seconds=args.retry_delay,
        retry_rules=args.retry_rules,
        ring_timeout_seconds=args.ring_timeout,
        scheduled_at=args.scheduled_at,
        default_region=args.default_region,
        phone_column=args.phone_column,
        encoding=args.encoding,
        calling_hours=args.calling_hours,
        timezone=args.timezone,
        amd=args.amd,
        on_machine=args.on_machine,
        webhook_url=args.webhook_url,
        webhook_secret=webhook_secret(args),
        idempotency_key=args.idempotency_key,
    )
    if args.json:
        _print_json(campaign, out)
        return 0
    print(campaign["id"], file=out)  # first line alone: ID=$(dialerctl campaigns create ... | head -n1)
    _report(campaign, out)
    return 0


def webhook_secret(args: argparse.Namespace, stdin: TextIO | None = None) -> str | None:
    """The secret of ``--webhook-secret VALUE``, ``--webhook-secret -`` (the first line of stdin) or
    ``--webhook-secret-file PATH`` (its first line), so it need not be in the shell's history; None: not given.
    The line's end is dropped (an empty value removes the webhook in an update)."""
    value: str | None = getattr(args, "webhook_secret", None)
    path: str | None = getattr(args, "webhook_secret_file", None)
    if value is not None and path is not None:
        raise UsageError("give --webhook-secret or --webhook-secret-file, not both")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as file:
                return file.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the webhook secret from {path!r}: {exc}") from None
    if value == "-":
        source = stdin or sys.stdin
        if stdin is None and source.isatty():
            return getpass.getpass("webhook secret: ")  # typed without echo
        return source.readline().rstrip("\r\n")
    return value


def update(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    """PATCH the settings given (draft, scheduled or paused); prints the campaign as ``get`` does."""
    changes = {
        "name": args.name, "max_concurrent_calls": args.max_concurrent_calls, "retries_per_contact": args.retries,
        "retry_delay_seconds": args.retry_delay, "ring_timeout_seconds": args.ring_timeout,
        "caller_id": args.caller_id, "destination": args.destination, "retry_rules": args.retry_rules,
        "calling_hours": args.calling_hours, "timezone": args.timezone,
        "caller_id_strategy": args.caller_id_strategy, "amd": args.amd, "on_machine": args.on_machine,
        "webhook_url": args.webhook_url, "webhook_secret": webhook_secret(args),
    }
    if all(value is None for value in changes.values()):
        raise UsageError("nothing to change: give at least one option (dialerctl update --help)")
    campaign = client.campaigns.update(args.id, **changes)
    if args.json:
        _print_json(campaign, out)
    else:
        show(campaign, out)
    return 0


def webhook(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    """The webhook's delivery state: one ``name value`` line each (``-``: none), or the JSON."""
    state = client.campaigns.webhook(args.id)
    if args.json:
        _print_json(state, out)
        return 0
    if state["url"] is None:
        print(f"{args.id} has no webhook (set one: dialerctl update {args.id} --webhook-url URL "
              "--webhook-secret-file PATH)", file=out)
    fields = [
        ("url", state["url"] or "-"),
        ("delivered through", f"event {state['delivered_through']}" if state["delivered_through"] else "-"),
        ("pending", state["pending"]),
        ("dead", state["dead"]),
        ("last error", state["last_error"] or "-"),
        ("last attempt at", state["last_attempt_at"] or "-"),
        ("next attempt at", state["next_attempt_at"] or "-"),
    ]
    for key, value in fields:
        print(f"{key:<22}{value}", file=out)
    return 0


def list_campaigns(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    page = client.campaigns.list(status=args.status, limit=args.limit, offset=args.offset, name=args.name)
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
        ("caller id strategy", campaign.get("caller_id_strategy") or "round_robin"),
        ("destination", campaign["destination"]),
        ("max concurrent calls", campaign["max_concurrent_calls"]),
        ("retries per contact", campaign["retries_per_contact"]),
        ("retry delay", f"{campaign['retry_delay_seconds']} s"),
        ("retry rules", campaign.get("retry_rules") or "-"),
        ("ring timeout", f"{campaign['ring_timeout_seconds']} s"),
        ("scheduled at", campaign["scheduled_at"] or "-"),
        ("amd", campaign.get("amd") or "off"),
        ("on machine", campaign.get("on_machine") or "-"),
        ("webhook url", campaign.get("webhook_url") or "-"),
        ("created at", campaign["created_at"] or "-"),
        ("started at", campaign["started_at"] or "-"),
        ("completed at", campaign["completed_at"] or "-"),
    ]
    for key, value in fields:
        print(f"{key:<22}{value}", file=out)
    stats = campaign.get("caller_id_stats") or []
    if stats:
        rows = [("CALLER ID", "ATTEMPTS", "ANSWERED", "ANSWER RATE", "REJECTED")]
        for s in stats:
            rate = "-" if s["answer_rate"] is None else f"{s['answer_rate']:.0%}"
            rows.append((s["caller_id"], str(s["attempts"]), str(s["answered"]), rate, str(s["rejected"])))
        print("caller ids:", file=out)
        _table(rows, out)


def get(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    campaign = client.campaigns.get(args.id)
    if args.json:
        _print_json(campaign, out)
    else:
        show(campaign, out)
    return 0


def explain(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    """Why the campaign is (not) dialling: a headline, then one line per reason with its count and time."""
    answer = client.campaigns.explain(args.id)
    if args.json:
        _print_json(answer, out)
        return 0
    for line in explain_lines(answer):
        print(line, file=out)
    return 0


def delete(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    client.campaigns.delete(args.id)
    print(f"deleted {args.id}", file=out)
    return 0


def action(name: str) -> Callable[[Dialerd, argparse.Namespace, TextIO], int]:
    def run(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
        # The client sends an Idempotency-Key (this one, or a new one) and retries a lost answer with it.
        campaign: Campaign = getattr(client.campaigns, name)(args.id, idempotency_key=args.idempotency_key)
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
        reason = c["failure_reason"] or c.get("reason") or "-"  # reason: why a skipped one was not dialled
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


def export(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    """The daemon's results CSV (every contact, its outcome and custom fields) to stdout or ``--output``."""
    if not args.output:
        out.flush()
        # The bytes as the daemon wrote them (UTF-8, CRLF) when stdout has a binary side.
        target: Any = getattr(out, "buffer", out)
        client.campaigns.export_csv(args.id, target, status=args.status)
        target.flush()
        return 0
    # Written aside and renamed at the end: a failure half-way never leaves a truncated export behind.
    partial = f"{args.output}.partial"
    try:
        with open(partial, "wb") as file:
            size = client.campaigns.export_csv(args.id, file, status=args.status)
        os.replace(partial, args.output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    print(f"exported {size} bytes to {args.output}", file=sys.stderr)
    return 0


def append(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    if not os.path.isfile(args.contacts):
        raise UsageError(f"contacts file {args.contacts!r} does not exist or is not a file")
    answer = client.campaigns.append(args.id, args.contacts, phone_column=args.phone_column,
                                     encoding=args.encoding)
    if args.json:
        _print_json(answer, out)
        return 0
    report: dict[str, Any] = dict(answer["import"])
    counts: dict[str, Any] = dict(answer["contacts"])
    print(
        f"appended {report.get('contacts', 0)} contacts to {answer['campaign_id']} ({answer['status']}) from "
        f"{report.get('rows_total', 0)} rows; {report.get('rows_rejected', 0)} rejected, "
        f"{report.get('duplicates', 0)} duplicates; the campaign has {counts.get('total', 0)} contacts",
        file=out,
    )
    _problems(report, out)
    return 0


# ---- suppressions ----------------------------------------------------------------------------------


def suppressions_add(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.numbers) == bool(args.file):
        raise UsageError("give numbers or --file FILE.csv (one of the two)")
    answer = client.suppressions.add(args.file or list(args.numbers), reason=args.reason,
                                     default_region=args.default_region)
    if args.json:
        _print_json(answer, out)
        return 0
    print(f"added {answer['added']}, already listed {answer['already']}, duplicates {answer['duplicates']}, "
          f"rejected {answer['rejected_total']}", file=out)
    for r in answer["rejected"]:
        where = f"line {r['line']}" if "line" in r else f"#{r.get('index')}"
        print(f"  {where}: {r['input']!r}: {r['reason']} ({r['code']})", file=out)
    return 0


def suppressions_list(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    page = client.suppressions.list(args.number, default_region=args.default_region, limit=args.limit,
                                    offset=args.offset)
    if args.json:
        _print_json(page, out)
        return 0
    for e in page["suppressions"]:
        print(f"{e['number']:<16} {e['source']:<8} {e['created_at']}  {e['reason']}", file=out)
    print(f"{len(page['suppressions'])} of {page['total']}", file=sys.stderr)
    return 0


def suppressions_delete(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    client.suppressions.delete(args.number)
    print(f"{args.number} removed", file=out)
    return 0


def _suppression_commands(sub: Any) -> None:
    def add(name: str, run: Command, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _connection_options(p, top=False)
        p.set_defaults(run=run)
        return p

    p = add("add", suppressions_add, "add numbers to the tenant's suppression list (do-not-call)")
    p.add_argument("numbers", nargs="*", help="phone numbers (E.164, or national with --default-region)")
    p.add_argument("--file", help="a CSV with a 'number' or 'phone' column instead of numbers")
    p.add_argument("--reason", help="why they must not be called")
    p.add_argument("--default-region", help="ISO country for national numbers, e.g. US")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    p = add("list", suppressions_list, "list the suppression list, newest first")
    p.add_argument("--number", help="look up this number")
    p.add_argument("--default-region", help="ISO country of a national --number")
    p.add_argument("--limit", type=int, help="page size (daemon default 100)")
    p.add_argument("--offset", type=int, help="skip this many")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    p = add("delete", suppressions_delete, "take a number off the list: it may be dialled again")
    p.add_argument("number", help="the number in E.164, e.g. +14155550100")



def limits(client: Dialerd, args: argparse.Namespace, out: TextIO) -> int:
    """The key's tenant limits (0: no limit) and usage: one ``name value`` line each, or the JSON."""
    answer = client.call_limits()
    if args.json:
        _print_json(answer, out)
        return 0
    for name, value in answer["limits"].items():
        shown = value if value or name == "timezone" else "-"
        print(f"{name:<24} {shown}", file=out)
    for name, value in answer["usage"].items():
        print(f"{name:<24} {value}", file=out)
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


IDEMPOTENCY_HELP = ("key that makes the request safe to repeat (default: a new one; a timed-out request is "
                    "retried with it)")


def _settings_options(p: argparse.ArgumentParser, update: bool = False) -> None:
    """The campaign settings create and update share (update: only those given are changed)."""
    if update:
        p.add_argument("--name", help="the campaign's new name")
    p.add_argument("--caller-id", help="caller id, or a pool of them separated by ',' (e.g. "
                   "'+12125550100,+13125550100')")
    p.add_argument("--caller-id-strategy", choices=("round_robin", "local_presence"),
                   help="how each call takes its caller id from the pool (default round_robin)")
    p.add_argument("--destination", help="context,extension or stasis:app (default: daemon config)")
    p.add_argument("--max-concurrent-calls", type=int)
    p.add_argument("--retries", type=int, help="retries per contact (0-5)")
    p.add_argument("--retry-delay", type=int, help="seconds between attempts (>= 60)")
    p.add_argument("--retry-rules", metavar="RULES",
                   help="outcome rules for retries, e.g. 'busy=3@120; no_answer=0@3600' (REASON=RETRIES@DELAY "
                   "entries; busy, no_answer, congestion, unreachable; one budget per contact)"
                   + ("; '' removes them" if update else ""))
    p.add_argument("--ring-timeout", type=int, help="seconds to let a call ring")
    p.add_argument("--calling-hours", metavar="HOURS", help="when calls may be placed, e.g. 'mon-fri 09:00-20:00'")
    p.add_argument("--timezone", help="IANA zone of --calling-hours, e.g. Europe/Berlin")
    p.add_argument("--amd", choices=("off", "on"), help="answering-machine detection (default off)")
    p.add_argument("--on-machine", metavar="ACTION",
                   help="with --amd on, what a machine's answer gets: hangup, voicemail:SOUND or connect")
    p.add_argument("--webhook-url", metavar="URL", help="POST every event of the campaign here, signed with the "
                   "webhook secret (docs/webhooks.md)" + ("; '' removes the webhook" if update else ""))
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--webhook-secret", metavar="SECRET", help="the key that signs each delivery (16-200 "
                        "characters); '-' reads it from stdin (a prompt without echo on a terminal), keeping "
                        "it out of the shell's history. Never shown by any answer")
    secret.add_argument("--webhook-secret-file", metavar="PATH", help="read the webhook secret from the first "
                        "line of this file")


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
        p.add_argument("--name", help="only campaigns whose name contains this (any case)")
        p = add("create", create, "create a draft campaign from a contacts CSV", takes_id=False)
        p.add_argument("contacts", help="CSV file with a phone_number column")
        p.add_argument("--name", required=True)
        _settings_options(p)
        p.add_argument("--scheduled-at", help="RFC 3339 time to start, e.g. 2030-01-31T09:00:00Z")
        p.add_argument("--default-region", help="ISO country for national numbers, e.g. US")
        p.add_argument("--phone-column", help="the CSV column holding the number (default: recognised headers)")
        p.add_argument("--encoding", help="the file's text encoding, e.g. cp1252 (default: BOM or detection)")
        p.add_argument("--idempotency-key", help=IDEMPOTENCY_HELP)
    add("get", get, "show a campaign")
    p = add("update", update, "change a draft, scheduled or paused campaign's settings (only those given)")
    _settings_options(p, update=True)
    add("webhook", webhook, "the webhook's delivery state: the last event delivered, pending, dead, the last error")
    add("explain", explain, "why a campaign is (not) dialling: each reason, the contacts it holds, when it lifts")
    add("delete", delete, "delete a campaign (not while running)", json_flag=False)
    for name, text in (("start", "start"), ("pause", "pause"), ("resume", "resume"), ("stop", "stop for good")):
        p = add(name, action(name), f"{text} a campaign")
        p.add_argument("--idempotency-key", help=IDEMPOTENCY_HELP)
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
    p = add("export", export, "the results CSV of a campaign, from the daemon: every contact with its "
            "outcome and custom fields", json_flag=False)
    p.add_argument("--status", help="only contacts in this status (e.g. failed)")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p = add("append", append, "add the contacts of a CSV to a draft, scheduled, paused or running campaign")
    p.add_argument("contacts", help="CSV file with a phone_number column")
    p.add_argument("--phone-column", help="the CSV column holding the number (default: recognised headers)")
    p.add_argument("--encoding", help="the file's text encoding, e.g. cp1252 (default: BOM or detection)")


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
    group = top.add_parser("suppressions", help="suppression list (do-not-call) commands",
                           description="the API key's tenant's suppression list (do-not-call)")
    _suppression_commands(group.add_subparsers(dest="action", required=True, metavar="ACTION"))

    p = top.add_parser("limits", help="the tenant's call limits and usage today",
                       description="the key's tenant limits (- : no limit) and usage (GET /api/v1/call-limits)")
    _connection_options(p, top=False)
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    p.set_defaults(run=limits)
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
