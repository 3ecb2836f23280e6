"""The ``dialerd`` command: serve, keys create, check-config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from dialerd.errors import ConfigError, DialerdError
from dialerd.logs import setup_logging
from dialerd.pbx.errors import EXIT_APP_IN_USE, AppInUse
from dialerd.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dialerd", description="Outbound campaign dialer for Asterisk")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML config file (see config/dialerd.toml)")
        sp.add_argument("--database-url", dest="database_url", help="overrides [database] url")

    serve = sub.add_parser("serve", help="run the daemon until SIGTERM/SIGINT")
    common(serve)
    serve.add_argument("--host", dest="server_host")
    serve.add_argument("--port", dest="server_port", type=int)
    serve.add_argument("--pbx-driver", dest="pbx_driver", choices=["ari", "ami", "fake"])

    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key (and the tenant if needed); prints the key last")
    common(create)
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument("--concurrent-max", type=int, help="tenant limit: concurrent calls across campaigns")
    create.add_argument("--calls-per-minute", type=int, help="tenant limit: call attempts per minute")
    create.add_argument("--label", default="", help="a note stored with the key")

    check = sub.add_parser("check-config", help="validate the settings and print them (secrets masked)")
    common(check)
    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    common(mig)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: getattr(args, k, None) for k in ("database_url", "server_host", "server_port", "pbx_driver")
    }
    return load_settings(args.config, overrides=overrides)


async def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from dialerd.services.auth import create_key
    from dialerd.store.db import create_engine, migrate
    from dialerd.store.repo import Store

    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        tenant_id, key = await create_key(
            Store(engine), args.tenant, concurrent_max=args.concurrent_max, calls_per_minute=args.calls_per_minute,
            defaults=(settings.dialer_tenant_concurrent_max, settings.dialer_tenant_calls_per_minute),
            label=args.label,
        )
    finally:
        await engine.dispose()
    print(f"tenant {args.tenant} ({tenant_id}); store this key now, it is not shown again:", file=sys.stderr)
    print(key)
    return 0


async def _migrate(settings: Settings) -> int:
    from dialerd.store.db import create_engine, migrate

    engine = create_engine(settings.database_url)
    try:
        version = await migrate(engine)
    finally:
        await engine.dispose()
    print(f"schema version {version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "check-config":
            print(json.dumps(settings.redacted(), indent=2))
            return 0
        if args.command == "keys":
            return asyncio.run(_keys_create(settings, args))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
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
        return 78
    except DialerdError as exc:
        print(f"dialerd: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
