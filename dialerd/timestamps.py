"""The clock (``utcnow``) and the one timestamp format of the API, REST and SSE alike: RFC 3339 in UTC, milliseconds and a ``Z``.

    >>> rfc3339(datetime(2026, 12, 2, 5, 18, 21, 123456, tzinfo=UTC))
    '2026-12-02T05:18:21.123Z'

Every place that puts a time into JSON (``api/render.py``, the SSE payloads the store and the services
build, the metrics snapshot, the client's ``scheduled_at``) calls this; nothing else formats times.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the one clock every layer stamps its times with."""
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """``value`` (timezone-aware) as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no place in the API: give it a time zone")
    v = value.astimezone(UTC)
    # Not strftime: it does not pad years before 1000 on every platform.
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            f".{v.microsecond // 1000:03d}Z")


def rfc3339_or_none(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)
