"""API keys: minted once, stored as SHA-256 hashes, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dialerd.domain.caps import TENANT_RULES, check_tenant_rules
from dialerd.domain.rules import FieldError
from dialerd.errors import Conflict, InvalidInput, NotFound, StoreError, Unauthorized
from dialerd.store.repo import Store
from dialerd.store.tables import ApiKey, Tenant
from dialerd.timestamps import utcnow

KEY_PREFIX = "dlr"
LAST_USED_RESOLUTION = 60.0  # seconds: how stale a key's last_used_at may be
log = logging.getLogger("dialerd.auth")
_DUMMY_HASH = hashlib.sha256(b"dialerd-no-such-key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a valid key belongs to."""

    tenant_id: str
    key_id: str


def hash_key(key: str) -> str:
    # Keys carry 192 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mint_key() -> tuple[str, str]:
    """Return (key_id, full key). Only the hash of the full key is stored."""
    key_id = "k" + secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"


def _key_id(key: str) -> str | None:
    parts = key.split("_", 2)  # the secret part may itself contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


class Authenticator:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._touched: dict[str, float] = {}  # key id -> clock() when last_used_at was last written

    async def _note_use(self, record: ApiKey) -> None:
        """Keep ``last_used_at`` to within LAST_USED_RESOLUTION: at most one write a minute per key."""
        now = self.clock()
        last = self._touched.get(record.id)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        self._touched[record.id] = now
        at = utcnow()
        if record.last_used_at is not None and (at - record.last_used_at).total_seconds() < LAST_USED_RESOLUTION:
            return  # written lately (by this daemon before a restart, or by another one)
        try:
            await self.store.touch_api_key(record.id, at)
        except StoreError as exc:  # bookkeeping only: a valid key is never refused for it
            log.warning("could not record the key's last use", extra={"action": "key_last_used", "key_id": record.id,
                                                                      "error": exc.message})

    async def authenticate(self, authorization: str | None) -> Principal:
        """Resolve an ``Authorization`` header to a Principal or raise Unauthorized."""
        if not authorization:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Authorization must be 'Bearer <api key>'")
        key_id = _key_id(key)
        record = await self.store.get_api_key(key_id) if key_id else None
        # Compare even when the key id is unknown so the timing says nothing about which ids exist.
        stored = record.secret_hash if record else _DUMMY_HASH
        if not hmac.compare_digest(stored, hash_key(key)) or record is None:
            raise Unauthorized("invalid API key")
        await self._note_use(record)
        return Principal(tenant_id=record.tenant_id, key_id=record.id)


def _check_name(tenant_name: str) -> str:
    name = tenant_name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("tenant name must be 1-200 characters", error_id="invalid_tenant")
    return name


def _check_limits(concurrent_max: int | None, calls_per_minute: int | None) -> None:
    for label_, value in (("concurrent_max", concurrent_max), ("calls_per_minute", calls_per_minute)):
        if value is not None and value < 1:
            raise InvalidInput(f"{label_} must be >= 1", error_id="invalid_tenant")


def _rules(given: Mapping[str, int | str | None] | None, current: Tenant | None = None) -> dict[str, int | str]:
    """The rule limits given, checked (InvalidInput naming the first bad one)."""
    now = {name: getattr(current, name) for name in TENANT_RULES} if current is not None else None
    try:
        return check_tenant_rules(dict(given or {}), now)
    except FieldError as exc:
        raise InvalidInput(f"{exc.field}: {exc.problem}", error_id="invalid_tenant") from None


def _limits_command(name: str, concurrent_max: int | None, calls_per_minute: int | None,
                    rules: Mapping[str, int | str] | None = None) -> str:
    words = ["dialerd", "tenants", "set", "--tenant", shlex.quote(name)]
    if concurrent_max is not None:
        words += ["--concurrent-max", str(concurrent_max)]
    if calls_per_minute is not None:
        words += ["--calls-per-minute", str(calls_per_minute)]
    for rule, value in (rules or {}).items():
        words += ["--" + rule.replace("_", "-"), shlex.quote(str(value))]
    return " ".join(words)


async def create_key(
    store: Store, tenant_name: str, *, concurrent_max: int | None, calls_per_minute: int | None,
    defaults: tuple[int, int], label: str = "", rules: Mapping[str, int | str | None] | None = None,
) -> tuple[str, str]:
    """Create the tenant if needed and mint a key. Returns (tenant_id, key).

    Limits apply to a tenant being created. For an existing tenant, limits equal to its own are accepted
    (a repeated script), different ones are refused (Conflict) before any key is minted: changing them is
    ``dialerd tenants set``'s job, never a side effect of a new key. ``rules``: the rule limits
    (``domain.caps.TENANT_RULES``; None or absent: not given, 0 for a new tenant).
    """
    name = _check_name(tenant_name)
    _check_limits(concurrent_max, calls_per_minute)
    checked = _rules(rules)
    tenant, created = await store.ensure_tenant(
        "t" + secrets.token_hex(8), name, concurrent_max or defaults[0], calls_per_minute or defaults[1], checked
    )
    if not created:
        asked: dict[str, int | str | None] = {"concurrent_max": concurrent_max, "calls_per_minute": calls_per_minute,
                                              **checked}
        differ = [
            f"{field_} {getattr(tenant, field_)!r} (asked {value!r})"
            for field_, value in asked.items()
            if value is not None and value != getattr(tenant, field_)
        ]
        if differ:
            raise Conflict(
                f"tenant {name} already exists with {', '.join(differ)}; keys create does not change an existing "
                f"tenant's limits: run `{_limits_command(name, concurrent_max, calls_per_minute, checked)}`, then "
                f"`dialerd keys create --tenant {shlex.quote(name)}` without limits",
                error_id="tenant_exists",
            )
    key_id, key = mint_key()
    await store.add_api_key(key_id, tenant.id, hash_key(key), label)
    return tenant.id, key


async def set_limits(
    store: Store, tenant_name: str, *, concurrent_max: int | None, calls_per_minute: int | None,
    rules: Mapping[str, int | str | None] | None = None,
) -> Tenant:
    """Change an existing tenant's limits (a running daemon applies them within seconds)."""
    name = _check_name(tenant_name)
    given_rules = {k: v for k, v in (rules or {}).items() if v is not None}
    if concurrent_max is None and calls_per_minute is None and not given_rules:
        options = ", ".join("--" + n.replace("_", "-") for n in ("concurrent_max", "calls_per_minute", *TENANT_RULES))
        raise InvalidInput(f"give at least one limit to change: {options}", error_id="invalid_tenant")
    _check_limits(concurrent_max, calls_per_minute)
    current = await store.get_tenant_by_name(name)
    if current is None:
        raise NotFound(
            f"no tenant {name}; `dialerd keys create --tenant {shlex.quote(name)}` creates it with its first key",
            error_id="tenant_not_found",
        )
    checked = _rules(given_rules, current)
    tenant = await store.set_tenant_limits(name, concurrent_max, calls_per_minute, checked)
    assert tenant is not None  # tenants are never deleted
    return tenant


def key_id_of(text: str) -> str:
    """The key id an operator typed: the id itself (``k...``) or a whole key (its id part is used)."""
    text = text.strip()
    return _key_id(text) or text


async def revoke_key(store: Store, key_text: str) -> tuple[ApiKey, bool]:
    """Revoke a key by id (or by the whole key). Returns (key, newly revoked); NotFound if unknown."""
    key_id = key_id_of(key_text)
    found = await store.revoke_api_key(key_id) if key_id else None
    if found is None:
        raise NotFound(f"no API key with id {key_id!r} (`dialerd keys list` shows the ids)", error_id="key_not_found")
    return found
