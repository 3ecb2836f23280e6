"""One typed settings object, layered: defaults < TOML file < ``DIALERD_*`` environment < CLI flags.

Every setting lives in a TOML section; its flat name is ``<section>_<key>`` and its environment
variable ``DIALERD_<SECTION>_<KEY>`` (e.g. ``[database] url`` <- ``DIALERD_DATABASE_URL``).
Invalid values raise :class:`dialerd.errors.ConfigError` naming the key. A ``DIALERD_*`` variable that is
neither a setting nor one of :data:`OTHER_ENV` (read by other tools) is refused like an unknown key in
the file, so a typo (``DIALERD_SERVER_PROT``) does not silently leave the default in force.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dialerd.domain.hours import CallingHours
from dialerd.domain.rules import FieldError
from dialerd.domain.zones import check_timezone
from dialerd.errors import ConfigError

SECRET_KEYS = frozenset({"ari_password", "ami_secret"})

ENV_PREFIX = "DIALERD_"
# DIALERD_* names that are not settings yet may be in dialerd's environment: the daemon ignores them.
# Keep this list and docs/operations.md ("Environment variables") in step (tests/unit/test_settings.py
# scans the source tree for DIALERD_* names).
OTHER_ENV: dict[str, str] = {
    "DIALERD_URL": "dialerctl and the Python client: the daemon's base URL",
    "DIALERD_API_KEY": "dialerctl and the Python client: the API key",
    "DIALERD_FAILPOINTS": "fault injection for the crash tests (dialerd/faults.py); never set it in production",
    "DIALERD_TEST_PG_URL": "the test suite: PostgreSQL admin URL",
    "DIALERD_BENCH_PG_URL": "bench/cluster.py: PostgreSQL admin URL",
    # asterisk/local-pbx prints these beside the settings (`eval "$(asterisk/local-pbx up)"`) ...
    "DIALERD_PBX_SIP_PORT": "asterisk/local-pbx: the simulated carrier's SIP port",
    "DIALERD_PBX_ASTERISK_VERSION": "asterisk/local-pbx: the Asterisk version",
    "DIALERD_PBX_ROOT": "asterisk/local-pbx: the Asterisk root file system",
    "DIALERD_PBX_CDR": "asterisk/local-pbx: the CDR file",
    # ... and reads these; asterisk/compose.yaml reads the last three.
    "DIALERD_PBX_CACHE": "asterisk/local-pbx: its cache directory",
    "DIALERD_PBX_MIRROR": "asterisk/local-pbx: the Debian mirror",
    "DIALERD_PBX_ARI_PORT": "asterisk/compose.yaml: the host's ARI port",
    "DIALERD_PBX_AMI_PORT": "asterisk/compose.yaml: the host's AMI port",
    "DIALERD_PBX_CDR_DIR": "asterisk/compose.yaml: the host's CDR directory",
}


def _meta(help: str, *, check: Callable[[Any], str | None] | None = None) -> dict[str, Any]:
    return {"help": help, "check": check}


def _formats(v: Any) -> str | None:
    return None if isinstance(v, str) and re.fullmatch(r"[a-z0-9_]{2,20}(,[a-z0-9_]{2,20})*", v) else \
        "must be Asterisk format names separated by commas, e.g. ulaw or alaw,ulaw"


def _range(lo: float, hi: float | None = None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number"
        if v < lo or (hi is not None and v > hi):
            return f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}"
        return None

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"

    return check


def _field_check(parse: Callable[[str], object]) -> Callable[[Any], str | None]:
    """A check from a domain parser that raises FieldError (the same rule as the form field)."""

    def check(v: Any) -> str | None:
        try:
            parse(v)
        except FieldError as e:
            return e.problem
        return None

    return check


@dataclass(frozen=True)
class Settings:
    """Every dialerd setting with its default. ``config/dialerd.toml`` documents the same keys."""

    server_host: str = field(default="127.0.0.1", metadata=_meta("address the HTTP API listens on"))
    server_port: int = field(default=8080, metadata=_meta("HTTP API port", check=_range(0, 65535)))
    server_max_upload_mb: float = field(
        default=10.0, metadata=_meta("largest contacts CSV accepted, in MB (413 above)", check=_range(0.001))
    )
    database_url: str = field(
        default="sqlite+aiosqlite:///dialerd.db",
        metadata=_meta("SQLAlchemy URL: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"),
    )
    pbx_driver: str = field(default="ari", metadata=_meta("ari or ami", check=_one_of("ari", "ami", "fake")))
    pbx_endpoint: str = field(
        default="PJSIP/{number}@carrier", metadata=_meta("dial string; {number} is the E.164 number")
    )
    pbx_max_channels: int = field(
        default=0, metadata=_meta("calls this daemon has up at once on its PBX, all campaigns; 0 = no limit",
                                  check=_range(0, 100000)),
    )
    ari_url: str = field(default="http://127.0.0.1:8088", metadata=_meta("Asterisk HTTP base URL"))
    ari_user: str = field(default="dialerd", metadata=_meta("ARI user (ari.conf)"))
    ari_password: str = field(default="", metadata=_meta("ARI password: environment only"))
    ari_app: str = field(default="dialerd", metadata=_meta("Stasis application name"))
    ami_host: str = field(default="127.0.0.1", metadata=_meta("AMI host"))
    ami_port: int = field(default=5038, metadata=_meta("AMI port", check=_range(1, 65535)))
    ami_user: str = field(default="dialerd", metadata=_meta("AMI user (manager.conf)"))
    ami_secret: str = field(default="", metadata=_meta("AMI secret: environment only"))
    dialer_default_destination: str = field(
        default="dialerd-demo,s,1",
        metadata=_meta("where answered calls go unless the campaign says: CONTEXT,EXTEN[,PRIO] or stasis:APP"),
    )
    dialer_default_caller_id: str = field(default="", metadata=_meta("caller id used when a campaign names none"))
    dialer_default_region: str = field(default="", metadata=_meta("ISO country for national numbers, e.g. US"))
    dialer_ring_timeout: int = field(
        default=30,
        metadata=_meta("seconds a call may ring before it counts as no answer", check=_range(5, 300)),
    )
    dialer_tenant_concurrent_max: int = field(
        default=10, metadata=_meta("concurrent_max for tenants created without one", check=_range(1, 10000))
    )
    dialer_tenant_calls_per_minute: int = field(
        default=60,
        metadata=_meta("calls_per_minute for tenants created without one", check=_range(1, 100000)),
    )
    compliance_calling_hours: str = field(
        default="",
        metadata=_meta(
            "calling hours in each recipient's local time for campaigns that name none, e.g. "
            "'mon-fri 09:00-20:00; sat 10:00-14:00'; empty = any time",
            check=_field_check(CallingHours.parse),
        ),
    )
    compliance_default_timezone: str = field(
        default="",
        metadata=_meta(
            "IANA zone for contacts whose zone neither the CSV, the number nor the campaign gives; empty = none",
            check=_field_check(check_timezone),
        ),
    )
    sse_snapshot_interval: float = field(
        default=2.0, metadata=_meta("seconds between metrics snapshots on the SSE stream", check=_range(0.05))
    )
    sse_heartbeat_interval: float = field(
        default=15.0, metadata=_meta("seconds between SSE heartbeat comments", check=_range(0.05))
    )
    sse_queue_size: int = field(
        default=1000,
        metadata=_meta("events buffered per SSE client before it catches up from the DB", check=_range(10)),
    )
    shutdown_grace_period: float = field(
        default=60.0, metadata=_meta("seconds live calls are followed after SIGTERM", check=_range(0))
    )
    webhooks_allow_private: bool = field(
        default=False,
        metadata=_meta("deliver webhooks to loopback, link-local and private addresses too (refused by default: "
                       "a campaign's URL must not reach into the PBX host's own network)"),
    )
    webhooks_timeout: float = field(
        default=10.0, metadata=_meta("seconds a webhook receiver has to answer before the try counts as failed",
                                     check=_range(0.1, 60)),
    )
    webhooks_retry_for: float = field(
        default=86400.0,
        metadata=_meta("seconds an event is retried (1 s doubling to 10 min, with jitter) before it is dead",
                       check=_range(1)),
    )
    webhooks_lease_seconds: float = field(
        default=10.0,
        metadata=_meta("seconds a daemon's lease on a campaign's webhook delivery holds unrenewed (several "
                       "daemons on one database: after its holder dies or stalls, another takes over then)",
                       check=_range(1, 3600)),
    )
    cluster_node_id: str = field(
        default="",
        metadata=_meta("this daemon's name among the daemons on one PostgreSQL database; empty = HOST/APP "
                       "(the host name and the ARI app; HOST/ami@AMI_HOST:PORT with AMI)"),
    )
    cluster_heartbeat_interval: float = field(
        default=1.0, metadata=_meta("seconds between this daemon's heartbeats (PostgreSQL)", check=_range(0.05, 60)),
    )
    cluster_lapse: float = field(
        default=5.0,
        metadata=_meta("seconds without a heartbeat after which a daemon counts as gone (PostgreSQL)",
                       check=_range(0.2, 3600)),
    )
    cluster_fence: bool = field(
        default=True,
        metadata=_meta("several daemons on PostgreSQL with ARI: originate through the PBX fence ([dialerd-fence] "
                       "in the dialplan, docs/fencing.md), so a daemon taking over a dead or frozen one may give its "
                       "committed, unsent attempts back for another dial; false: those wait for it to rejoin"),
    )
    cluster_fence_formats: str = field(
        default="ulaw",
        metadata=_meta("the codec the fence's Local channel is pinned to: the trunk's (else the Local pair "
                       "negotiates slin192 at ~6x the Asterisk CPU per call)", check=_formats),
    )
    log_level: str = field(
        default="info",
        metadata=_meta("debug, info, warning or error", check=_one_of("debug", "info", "warning", "error")),
    )
    log_format: str = field(default="json", metadata=_meta("json or text", check=_one_of("json", "text")))

    @property
    def upload_limit_bytes(self) -> int:
        return int(self.server_max_upload_mb * 1024 * 1024)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for logs and check-config."""
        out = dataclasses.asdict(self)
        for key in SECRET_KEYS:
            if out[key]:
                out[key] = "***"
        return out


def _sections() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in fields(Settings):
        section, _, key = f.name.partition("_")
        out.setdefault(section, set()).add(key)
    return out


def _coerce(name: str, raw: Any, typ: str) -> Any:
    try:
        if typ == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(raw, str) and raw.strip().lower() in ("false", "0", "no", "off", ""):
                return False
            raise ValueError
        if typ == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if typ == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if not isinstance(raw, str):
            raise ValueError
        return raw
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: expected {typ}, got {raw!r}", key=name) from None


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the layers; raise ConfigError naming the bad key."""
    values: dict[str, Any] = {}
    types = {f.name: str(f.type) for f in fields(Settings)}
    sections = _sections()
    if config_file is not None:
        path = Path(config_file)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist", key="config") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}", key="config") from None
        for section, table in doc.items():
            if section not in sections or not isinstance(table, dict):
                raise ConfigError(f"unknown config section [{section}] in {path}", key=section)
            for key, raw in table.items():
                name = f"{section}_{key}"
                if key not in sections[section]:
                    raise ConfigError(f"unknown config key {section}.{key} in {path}", key=f"{section}.{key}")
                if name in SECRET_KEYS and raw:
                    raise ConfigError(
                        f"{section}.{key} is a secret: set DIALERD_{name.upper()} in the environment "
                        "(systemd EnvironmentFile), not in the config file",
                        key=f"{section}.{key}",
                    )
                values[name] = _coerce(f"{section}.{key}", raw, types[name])
    environ = os.environ if env is None else env
    known = {f"{ENV_PREFIX}{name.upper()}": name for name in types}
    for var in sorted(environ):
        if var.startswith(ENV_PREFIX) and var not in known and var not in OTHER_ENV:
            raise ConfigError(_unknown_env(var, known), key=var)
    for var, name in known.items():
        if var in environ:
            values[name] = _coerce(var, environ[var], types[name])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, types[name])
    settings = Settings(**values)
    for f in fields(Settings):
        check = f.metadata.get("check")
        problem = check(getattr(settings, f.name)) if check else None
        if problem:
            raise ConfigError(f"setting {f.name}: {problem} (got {getattr(settings, f.name)!r})", key=f.name)
    if settings.pbx_driver in ("ari", "ami") and "{number}" not in settings.pbx_endpoint:
        raise ConfigError("setting pbx_endpoint: must contain {number}", key="pbx_endpoint")
    return settings


def _unknown_env(var: str, known: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(var, list(known), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"unknown environment variable {var}: not a setting ({hint}settings are DIALERD_<SECTION>_<KEY>, "
        "see config/dialerd.toml); unset it"
    )
