"""``Idempotency-Key``: a retried create or lifecycle action returns the first answer instead of acting twice.

A key belongs to a tenant and lives 24 hours. The first request with it claims it (a row, state
``in_progress``, written before the work starts), runs, and stores its answer (status and JSON body).
Within the 24 hours the same key with the same request (``request_hash``: method, path and what the body
says) gets that answer again, marked ``Idempotent-Replayed: true``; with another request, 409
``idempotency_key_reused``; while the first is still running (a big import takes tens of seconds), 409
``idempotency_key_in_progress``, so a client that timed out retries later and gets the result.

Only successful answers (2xx) are stored. An error answer (a 4xx from validation, a 409 of the state
machine, a 5xx) releases the key: nothing was done, so the same key may be sent again, corrected or not,
and a crash is never replayed. A claim left ``in_progress`` by a daemon process that is gone (it crashed
mid-request; one daemon serves a database) is taken over by the next request with that key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dialerd.errors import Conflict, InvalidInput
from dialerd.store.repo import Store

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
_KEY = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")  # printable ASCII, not starting with a space


@dataclass(frozen=True)
class Answer:
    status: int
    body: str  # JSON text
    replayed: bool = False


def check_key(raw: str | None) -> str | None:
    """The header's key, or None without one; 400 for a key that cannot be one."""
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise InvalidInput(
            f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters (e.g. a UUID)",
            error_id="invalid_idempotency_key", header=HEADER,
        )
    return key


def request_hash(method: str, path: str, body_digest: str) -> str:
    return hashlib.sha256(json.dumps([method.upper(), path, body_digest]).encode()).hexdigest()


class Idempotency:
    def __init__(self, store: Store) -> None:
        self.store = store
        # This process: a claim in progress under another owner was left by a process that is gone.
        self.owner = "proc_" + secrets.token_hex(8)

    async def run(
        self, tenant_id: str, key: str | None, fingerprint: str,
        work: Callable[[], Awaitable[tuple[int, dict[str, Any], str | None]]],
    ) -> Answer:
        """Run ``work`` (returning status, body and the campaign id) once per key, or replay its answer."""
        if key is None:
            status, body, _cid = await work()
            return Answer(status, json.dumps(body))
        held = await self.store.claim_idempotency_key(tenant_id, key, fingerprint, self.owner, TTL)
        if held is not None:
            if held.request_hash != fingerprint:
                raise Conflict(
                    f"{HEADER} {key!r} was already used with a different request (method, path or body) in the "
                    "last 24 hours; use a new key for a new request",
                    error_id="idempotency_key_reused", header=HEADER,
                )
            if held.state != "done" or held.response_status is None or held.response_body is None:
                raise Conflict(
                    f"a request with {HEADER} {key!r} is still in progress; retry later with the same key to "
                    "get its result",
                    error_id="idempotency_key_in_progress", header=HEADER, retry_after_seconds=1,
                )
            return Answer(held.response_status, held.response_body, replayed=True)
        try:
            status, body, campaign_id = await work()
        except BaseException:
            # Nothing was done (create is all or nothing, an action either happened or raised): let go of
            # the key, even while this request is being cancelled.
            await asyncio.shield(self.store.release_idempotency_key(tenant_id, key, self.owner))
            raise
        text = json.dumps(body)
        await asyncio.shield(
            self.store.finish_idempotency_key(tenant_id, key, self.owner, status, text, campaign_id)
        )
        return Answer(status, text)
