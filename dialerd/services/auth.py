"""API keys: minted once, stored as SHA-256 hashes, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from dialerd.errors import InvalidInput, Unauthorized
from dialerd.store.repo import Store

KEY_PREFIX = "dlr"
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
    def __init__(self, store: Store) -> None:
        self.store = store

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
        return Principal(tenant_id=record.tenant_id, key_id=record.id)


async def create_key(
    store: Store, tenant_name: str, *, concurrent_max: int | None, calls_per_minute: int | None,
    defaults: tuple[int, int], label: str = "",
) -> tuple[str, str]:
    """Create the tenant if needed (or update its limits) and mint a key. Returns (tenant_id, key)."""
    name = tenant_name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("tenant name must be 1-200 characters", error_id="invalid_tenant")
    for label_, value in (("concurrent_max", concurrent_max), ("calls_per_minute", calls_per_minute)):
        if value is not None and value < 1:
            raise InvalidInput(f"{label_} must be >= 1", error_id="invalid_tenant")
    tenant = await store.upsert_tenant(
        "t" + secrets.token_hex(8), name, concurrent_max, calls_per_minute, defaults=defaults
    )
    key_id, key = mint_key()
    await store.add_api_key(key_id, tenant.id, hash_key(key), label)
    return tenant.id, key
