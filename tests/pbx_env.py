"""Helpers for tests that need the real local Asterisk started by ``asterisk/local-pbx``.

``local_pbx_env()`` starts it once per process (``up`` is idempotent and serialised by a file lock, so
parallel sessions share one Asterisk) and returns the ``DIALERD_*`` settings it printed. The other
helpers drive outages for reliability tests; ``pbx_stop``/``pbx_restart`` affect every test session
using the same Asterisk.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_PBX = REPO / "asterisk" / "local-pbx"
ASTERISK_CONF = "/etc/asterisk/asterisk.conf"
EXIT_DOWN = 3

_env_cache: dict[str, str] | None = None


class LocalPbxError(RuntimeError):
    """``asterisk/local-pbx`` failed; the message carries its stderr."""


def _local_pbx(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    # 600 s covers a cold `up` that has to debootstrap the root file system first.
    return subprocess.run(
        [str(LOCAL_PBX), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _checked(*args: str, timeout: float = 600.0) -> str:
    proc = _local_pbx(*args, timeout=timeout)
    if proc.returncode != 0:
        raise LocalPbxError(f"local-pbx {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def parse_exports(text: str) -> dict[str, str]:
    """Parse ``export NAME=value`` lines (values shell-quoted) into a dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


def local_pbx_env() -> dict[str, str]:
    """Start (or reuse) the local Asterisk and return its DIALERD_* settings; cached per process."""
    global _env_cache
    if _env_cache is None:
        env = parse_exports(_checked("up"))
        if "DIALERD_ARI_URL" not in env:
            raise LocalPbxError("local-pbx up printed no DIALERD_ARI_URL")
        _env_cache = env
    return dict(_env_cache)


def pbx_is_up() -> bool:
    """True if ``local-pbx status`` reports Asterisk up and healthy (ARI and AMI answer)."""
    return _local_pbx("status", timeout=30).returncode == 0


def pbx_cli(env: dict[str, str], command: str, timeout: float = 10.0) -> str:
    """Run one Asterisk CLI command (``asterisk -rx``) inside the PBX's chroot."""
    proc = subprocess.run(
        ["chroot", env["DIALERD_PBX_ROOT"], "/usr/sbin/asterisk", "-C", ASTERISK_CONF, "-rx", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise LocalPbxError(f"asterisk -rx {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def pbx_channel_count(env: dict[str, str]) -> int:
    """Active channels in the whole Asterisk (each looped call is two: PJSIP/carrier-* and PJSIP/farend-*)."""
    out = pbx_cli(env, "core show channels count")
    match = re.search(r"^(\d+) active channels?", out, re.MULTILINE)
    if match is None:
        raise LocalPbxError(f"unexpected 'core show channels count' output: {out!r}")
    return int(match.group(1))


def _same_ports(env: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    for key in ("DIALERD_ARI_URL", "DIALERD_AMI_PORT", "DIALERD_PBX_SIP_PORT"):
        if new.get(key) != env.get(key):
            raise LocalPbxError(f"{key} changed across the outage: {env.get(key)} -> {new.get(key)}")
    return new


def pbx_stop(env: dict[str, str]) -> None:
    """Stop Asterisk (``core stop now``); idempotent. Live calls are torn down."""
    _checked("down", timeout=60)


def pbx_start(env: dict[str, str]) -> dict[str, str]:
    """Start Asterisk again on the same ports as ``env``; no-op if it is already up."""
    if pbx_is_up():
        return _same_ports(env, parse_exports(_checked("status", timeout=30)))
    return _same_ports(env, parse_exports(_checked("restart", timeout=120)))


def pbx_restart(env: dict[str, str]) -> dict[str, str]:
    """Stop and start Asterisk on the same ports (credentials and ports unchanged)."""
    return _same_ports(env, parse_exports(_checked("restart", timeout=120)))
