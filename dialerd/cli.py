"""The ``dialerd`` command: serve, keys create/list/revoke, tenants list/set, check-config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from dialerd.domain.caps import TENANT_RULES
from dialerd.errors import ConfigError, DialerdError, InvalidInput
from dialerd.logs import setup_logging
from dialerd.pbx.errors import EXIT_APP_IN_USE, AppInUse
from dialerd.settings import Settings, load_settings

# Exit codes. docs/operations.md ("Exit codes") documents the same table; tests/e2e/test_cli.py compares them.
EXIT_OK = 0
EXIT_CRASHED = 1  # serve: stopped by a crashed internal task (or a failure at start, traceback logged)
EXIT_USAGE = 2  # a bad command line, or a request the command refuses (message on stderr)
EXIT_DATABASE = 69  # EX_UNAVAILABLE: keys, tenants, migrate could not open or reach the database
EXIT_CONFIG = 78  # EX_CONFIG: an invalid setting, or the API address cannot be listened on
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C) before serve was up, or during another command

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done; for serve: stopped by SIGTERM/SIGINT after the staged shutdown",
    EXIT_CRASHED: "serve stopped by a crashed internal task, or failed at start (traceback in the log); "
    "systemd restarts it",
    EXIT_USAGE: "bad command line, or refused (unknown key id or tenant, limits for an existing tenant, ...)",
    EXIT_DATABASE: "keys, tenants or migrate could not open or reach the database",
    EXIT_APP_IN_USE: "serve: the ARI app is held by a live client (another dialerd or a websocket); systemd "
    "retries, and the start succeeds once the other client is gone",
    EXIT_CONFIG: "invalid configuration (the message names the setting), or server.host/server.port cannot "
    "be listened on (e.g. the port is in use); systemd does not restart on it",
    EXIT_INTERRUPTED: "interrupted (SIGINT) before serve was up, or during another command",
}

# Form fields the defaults stand in for -> the setting (so an error names the setting, not the field).
_DEFAULTS = {
    "destination": "dialer.default_destination",
    "caller_id": "dialer.default_caller_id",
    "default_region": "dialer.default_region",
}


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:<4} {text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dialerd", description="Outbound campaign dialer for Asterisk", epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML config file (see config/dialerd.toml)")
        sp.add_argument("--database-url", dest="database_url", help="overrides [database] url")

    def limits(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--concurrent-max", type=int, help=f"{what}: concurrent calls across campaigns")
        sp.add_argument("--calls-per-minute", type=int, help=f"{what}: call attempts per minute")
        sp.add_argument("--daily-calls-max", type=int, help=f"{what}: call attempts per day (0 = no limit)")
        sp.add_argument("--daily-minutes-max", type=int, help=f"{what}: answered talk minutes per day (0 = no limit)")
        sp.add_argument("--max-attempts-per-number", type=int,
                        help=f"{what}: attempts to one number across campaigns per frequency window (0 = no limit)")
        sp.add_argument("--frequency-window-hours", type=int,
                        help=f"{what}: the window of --max-attempts-per-number, in hours (0 = no limit)")
        sp.add_argument("--timezone", help=f"{what}: IANA zone whose calendar day the daily caps count (default UTC)")

    serve = sub.add_parser("serve", help="run the daemon until SIGTERM/SIGINT")
    common(serve)
    serve.add_argument("--host", dest="server_host")
    serve.add_argument("--port", dest="server_port", type=int)
    serve.add_argument("--pbx-driver", dest="pbx_driver", choices=["ari", "ami", "fake"])

    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser(
        "create", help="create a key (and the tenant if needed); prints the key last",
        description="Mint an API key for TENANT, creating the tenant if needed. The limits apply to a new "
        "tenant; for an existing one they must equal its own (change them with `dialerd tenants set`).",
    )
    common(create)
    create.add_argument("--tenant", required=True, help="tenant name")
    limits(create, "limit of a new tenant")
    create.add_argument("--label", default="", help="a note stored with the key")
    klist = ksub.add_parser("list", help="list the keys: id, tenant, created, last used, revoked, label (never the key)")
    common(klist)
    klist.add_argument("--tenant", help="only this tenant's keys")
    klist.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    revoke = ksub.add_parser("revoke", help="revoke a key: it answers 401 from then on")
    common(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (k..., see keys list)")

    tenants = sub.add_parser("tenants", help="list tenants and change their limits")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    tlist = tsub.add_parser("list", help="list the tenants with their limits and active keys")
    common(tlist)
    tlist.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    tset = tsub.add_parser("set", help="change an existing tenant's limits (a running daemon applies them)")
    common(tset)
    tset.add_argument("--tenant", required=True, help="tenant name")
    limits(tset, "new limit")

    check = sub.add_parser(
        "check-config", help="validate the settings (and the campaign defaults) and print them (secrets masked)"
    )
    common(check)
    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    common(mig)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: getattr(args, k, None) for k in ("database_url", "server_host", "server_port", "pbx_driver")
    }
    return load_settings(args.config, overrides=overrides)


def check_defaults(settings: Settings) -> None:
    """Validate the campaign defaults with the create form's own rules; ConfigError naming the setting."""
    from dialerd.api.forms import build_spec

    try:
        build_spec({"name": "check-config"}, settings)  # every field left out: the defaults stand in
    except InvalidInput as exc:
        field = str(exc.details.get("field", ""))
        setting = _DEFAULTS.get(field, field)
        message = exc.message.removeprefix(f"{field}: ") if field else exc.message
        raise ConfigError(f"setting {setting}: {message}", key=setting) from None


async def _with_store(settings: Settings, work: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from dialerd.store.db import create_engine, migrate
    from dialerd.store.repo import Store

    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        return await work(Store(engine))
    finally:
        await engine.dispose()


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _rule_args(args: argparse.Namespace) -> dict[str, int | str | None]:
    """The rule-limit options given on the command line (None: not given)."""
    return {name: getattr(args, name, None) for name in TENANT_RULES}


async def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from dialerd.services.auth import create_key

    async def work(store: Any) -> int:
        tenant_id, key = await create_key(
            store, args.tenant, concurrent_max=args.concurrent_max, calls_per_minute=args.calls_per_minute,
            defaults=(settings.dialer_tenant_concurrent_max, settings.dialer_tenant_calls_per_minute),
            label=args.label, rules=_rule_args(args),
        )
        print(f"tenant {args.tenant} ({tenant_id}); store this key now, it is not shown again:", file=sys.stderr)
        print(key)
        return EXIT_OK

    return await _with_store(settings, work)


async def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        keys = await store.list_api_keys(args.tenant)
        # Never the key nor its hash: the id, who owns it, and when.
        records = [
            {"id": k.id, "tenant": tenant, "created_at": _when(k.created_at),
             "last_used_at": None if k.last_used_at is None else _when(k.last_used_at),
             "revoked_at": None if k.revoked_at is None else _when(k.revoked_at), "label": k.label}
            for k, tenant in keys
        ]
        if args.json:
            print(json.dumps(records, indent=2))
        else:
            header = ["ID", "TENANT", "CREATED", "LAST_USED", "REVOKED", "LABEL"]
            print(_table([header] + [
                [r["id"], r["tenant"], r["created_at"], r["last_used_at"] or "-", r["revoked_at"] or "-", r["label"]]
                for r in records
            ]))
        return EXIT_OK

    return await _with_store(settings, work)


async def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from dialerd.services.auth import revoke_key

    async def work(store: Any) -> int:
        key, newly = await revoke_key(store, args.key_id)
        state = "revoked" if newly else "was already revoked"
        print(f"key {key.id} {state} at {_when(key.revoked_at)}; it answers 401 from now on")
        return EXIT_OK

    return await _with_store(settings, work)


async def _tenants_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        tenants = await store.list_tenants()
        counts = await store.active_key_counts()
        records = [
            {"name": t.name, "id": t.id, "concurrent_max": t.concurrent_max, "calls_per_minute": t.calls_per_minute,
             **{name: getattr(t, name) for name in TENANT_RULES},
             "active_keys": counts.get(t.id, 0), "created_at": _when(t.created_at)}
            for t in tenants
        ]
        if args.json:
            print(json.dumps(records, indent=2))
        else:
            header = ["NAME", "ID", "CONCURRENT_MAX", "CALLS_PER_MINUTE", *(n.upper() for n in TENANT_RULES),
                      "ACTIVE_KEYS", "CREATED"]
            print(_table([header] + [[str(v) if v != "" else "-" for v in r.values()] for r in records]))
        return EXIT_OK

    return await _with_store(settings, work)


async def _tenants_set(settings: Settings, args: argparse.Namespace) -> int:
    from dialerd.services.auth import set_limits

    async def work(store: Any) -> int:
        tenant = await set_limits(
            store, args.tenant, concurrent_max=args.concurrent_max, calls_per_minute=args.calls_per_minute,
            rules=_rule_args(args),
        )
        limits = ", ".join(f"{name} {getattr(tenant, name) or ('UTC' if name == 'timezone' else 0)}"
                           for name in ("concurrent_max", "calls_per_minute", *TENANT_RULES))
        print(f"tenant {tenant.name} ({tenant.id}): {limits}")
        return EXIT_OK

    return await _with_store(settings, work)


async def _migrate(settings: Settings) -> int:
    from dialerd.store.db import create_engine, migrate

    engine = create_engine(settings.database_url)
    try:
        version = await migrate(engine)
    finally:
        await engine.dispose()
    print(f"schema version {version}")
    return EXIT_OK


_STORE_COMMANDS: dict[tuple[str, str], Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    ("keys", "create"): _keys_create,
    ("keys", "list"): _keys_list,
    ("keys", "revoke"): _keys_revoke,
    ("tenants", "list"): _tenants_list,
    ("tenants", "set"): _tenants_set,
}


def _database_command(settings: Settings, command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command that only talks to the database; an unreachable database is one line and EXIT_DATABASE."""
    from sqlalchemy.exc import SQLAlchemyError

    from dialerd.errors import StoreError

    try:
        return asyncio.run(command())
    except (OSError, SQLAlchemyError, StoreError) as exc:
        cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
        print(f"dialerd: cannot use the database ({_safe_url(settings.database_url)}): "
              f"{type(cause).__name__}: {_first_line(cause)}", file=sys.stderr)
        return EXIT_DATABASE


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "database_url"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else "no detail"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "check-config":
            check_defaults(settings)
            print(json.dumps(settings.redacted(), indent=2))
            return EXIT_OK
        if args.command in ("keys", "tenants"):
            sub = args.keys_command if args.command == "keys" else args.tenants_command
            run = _STORE_COMMANDS[(args.command, sub)]
            return _database_command(settings, lambda: run(settings, args))
        if args.command == "migrate":
            return _database_command(settings, lambda: _migrate(settings))
        check_defaults(settings)
        setup_logging(settings.log_level, settings.log_format)
        from dialerd.daemon import serve

        return asyncio.run(serve(settings))
    except AppInUse as exc:
        # One line, in the daemon's log format; 75 (EX_TEMPFAIL): systemd retries, and the start succeeds
        # once the other client has let the app go.
        logging.getLogger("dialerd.daemon").critical(exc.message, extra={"action": "ari_app_in_use"})
        return EXIT_APP_IN_USE
    except ConfigError as exc:
        # EX_CONFIG: systemd does not restart on it (RestartPreventExitStatus=78); a retry cannot help.
        print(f"dialerd: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except DialerdError as exc:
        print(f"dialerd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

