"""Which zone(s) a contact's calling hours are read in, and which IANA names dialerd accepts. Pure.

A contact's zones come from the first of (issue 11):

1. ``column``: the CSV's ``timezone`` cell, an IANA name (an unknown one rejects the row: ``column_timezone``);
2. ``number``: the zones ``phonenumbers`` gives for the number, possibly several (an area code spanning
   zones, a toll-free or mobile range): the window must then be open in every one of them;
3. ``campaign``: the campaign's ``timezone`` form field;
4. ``default``: config ``[compliance] default_timezone``;

else none: the contact cannot be placed in time and waits with ``blocked_reason: "no_timezone"`` (only
when its campaign has calling hours; any-time hours need no zone).

Names are checked against this machine's tz database (what ``zoneinfo`` can load), read in any case and
answered in the database's spelling (``europe/berlin`` -> ``Europe/Berlin``). From ``phonenumbers`` the
unknown marker ``Etc/Unknown`` is dropped, and so is a zone this machine's database does not know (older
than phonenumbers' data); a number left with none falls through to the campaign's zone.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException
from phonenumbers.timezone import time_zones_for_number

from dialerd.domain.rules import FieldError

UNKNOWN_ZONE = "Etc/Unknown"  # phonenumbers' answer for a number it cannot place
# Files of the tz directory that zoneinfo lists but that name no place.
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
ROW_CODE = "unknown_timezone"  # the import's rejection code for a bad ``timezone`` cell
_EXAMPLES = "e.g. America/New_York, Europe/Berlin, UTC"
ZONES_SEPARATOR = ","  # between the zones of a contact in its stored and rendered text


class TimezoneSource(StrEnum):
    """Where a contact's zones came from (contacts JSON ``timezone_source``)."""

    COLUMN = "column"
    NUMBER = "number"
    CAMPAIGN = "campaign"
    DEFAULT = "default"


@dataclass(frozen=True)
class ContactZones:
    """The zones a contact's calling hours are read in, and their source; no zones: not placed in time."""

    zones: tuple[str, ...] = ()
    source: TimezoneSource | None = None

    @property
    def placed(self) -> bool:
        return bool(self.zones)

    @property
    def text(self) -> str:
        """The zones as one text (``America/Boise,America/Los_Angeles``), for a column and the JSON."""
        return zones_text(self.zones)


@lru_cache(maxsize=1)
def _known() -> dict[str, str]:
    """Every zone name this machine can load, by its lower-case form (read once, on first use)."""
    return {name.lower(): name for name in zoneinfo.available_timezones() - _NOT_PLACES}


@lru_cache(maxsize=1)
def _by_city() -> dict[str, tuple[str, ...]]:
    """Zone names by their last part (``new_york`` -> America/New_York), for a hint."""
    cities: dict[str, list[str]] = {}
    for name in sorted(_known().values()):
        cities.setdefault(name.rsplit("/", 1)[-1].lower(), []).append(name)
    return {city: tuple(names) for city, names in cities.items()}


def canonical_zone(name: str) -> str | None:
    """The tz database's spelling of the IANA zone ``name`` (any case), or None if it is not one."""
    return _known().get(name.strip().lower())


def _unknown(raw: str) -> str:
    shown = raw.strip()[:60]
    hint = _by_city().get(shown.replace(" ", "_").lower().rsplit("/", 1)[-1]) if shown else None
    if hint:
        return f"{shown!r} is not an IANA time zone name; did you mean {' or '.join(hint[:3])}?"
    return f"{shown!r} is not an IANA time zone name ({_EXAMPLES})"


def check_timezone(raw: str | None, *, field: str = "timezone") -> str | None:
    """A ``timezone`` setting (form field, CLI option, config key): None when empty, else its canonical name.

    Raises FieldError naming ``field`` for a name that is not an IANA zone on this machine.
    """
    if raw is None or not raw.strip():
        return None
    zone = canonical_zone(raw)
    if zone is None:
        raise FieldError(field, _unknown(raw))
    return zone


def column_timezone(cell: str) -> str | tuple[str, str]:
    """The CSV ``timezone`` cell of a row: its canonical zone, or ``(code, reason)`` rejecting the row.

    The caller skips empty cells (the contact's zones then come from its number).
    """
    zone = canonical_zone(cell)
    if zone is None:
        return ROW_CODE, f"timezone {_unknown(cell)}"
    return zone


def number_zones(e164: str) -> tuple[str, ...]:
    """The zones ``phonenumbers`` gives for an E.164 number, known ones only, in its order; () if none."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return ()
    zones = (canonical_zone(name) for name in time_zones_for_number(number) if name != UNKNOWN_ZONE)
    return tuple(dict.fromkeys(zone for zone in zones if zone is not None))


def resolve_zones(
    e164: str, *, column: str | None = None, campaign: str | None = None, default: str | None = None,
) -> ContactZones:
    """A contact's zones by the rule above. ``column``, ``campaign`` and ``default`` are checked names
    (``column_timezone``, ``check_timezone``) or None/empty when absent."""
    if column:
        return ContactZones((column,), TimezoneSource.COLUMN)
    zones = number_zones(e164)
    if zones:
        return ContactZones(zones, TimezoneSource.NUMBER)
    if campaign:
        return ContactZones((campaign,), TimezoneSource.CAMPAIGN)
    if default:
        return ContactZones((default,), TimezoneSource.DEFAULT)
    return ContactZones()


def zones_text(zones: Sequence[str]) -> str:
    return ZONES_SEPARATOR.join(zones)


def parse_zones_text(text: str | None) -> tuple[str, ...]:
    """The zones of ``zones_text`` (a stored column) back; empty or None -> ()."""
    return tuple(part for part in (text or "").split(ZONES_SEPARATOR) if part)
