"""A contact's zones (``dialerd/domain/zones.py``): the CSV column, the number, the campaign, the default."""

from __future__ import annotations

import pytest

from dialerd.domain.rules import FieldError
from dialerd.domain.zones import (
    ROW_CODE,
    ContactZones,
    TimezoneSource,
    canonical_zone,
    check_timezone,
    column_timezone,
    number_zones,
    parse_zones_text,
    resolve_zones,
    zones_text,
)

SF = "+14155550142"  # the test PBX's fictional range, area code 415: Pacific time
IDAHO = "+12085550100"  # area code 208 spans Mountain (Boise) and Pacific time
TOLL_FREE = "+18005550100"  # non-geographic: every zone of the North American plan
NON_GEOGRAPHIC = "+80012345678"  # an international freephone: phonenumbers cannot place it


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("America/New_York", "America/New_York"),
        ("america/new_york", "America/New_York"),
        ("  Europe/Berlin ", "Europe/Berlin"),
        ("UTC", "UTC"),
        ("utc", "UTC"),
        ("Etc/GMT+5", "Etc/GMT+5"),
        ("America/North_Dakota/Center", "America/North_Dakota/Center"),
    ],
)
def test_iana_names_are_read_in_any_case(raw: str, zone: str) -> None:
    assert check_timezone(raw) == zone
    assert canonical_zone(raw) == zone
    assert column_timezone(raw) == zone


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_an_empty_timezone_is_none(raw: str | None) -> None:
    assert check_timezone(raw) is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("New_York", "'New_York' is not an IANA time zone name; did you mean America/New_York?"),
        ("new york", "did you mean America/New_York?"),
        ("Berlin", "did you mean Europe/Berlin?"),
        ("Mars/Olympus", "'Mars/Olympus' is not an IANA time zone name (e.g. America/New_York, Europe/Berlin, UTC)"),
        ("PST", "'PST' is not an IANA time zone name"),
        ("+02:00", "'+02:00' is not an IANA time zone name"),
        ("Etc/Unknown", "'Etc/Unknown' is not an IANA time zone name"),
        # Files of the tz directory that name no place, and paths.
        ("localtime", "'localtime' is not an IANA time zone name"),
        ("posixrules", "'posixrules' is not an IANA time zone name"),
        ("Factory", "'Factory' is not an IANA time zone name"),
        ("../../etc/passwd", "is not an IANA time zone name"),
        ("/usr/share/zoneinfo/UTC", "is not an IANA time zone name"),
        ("Europe/Berlin\x00", "is not an IANA time zone name"),
    ],
)
def test_unknown_names_are_a_field_error_naming_timezone(raw: str, problem: str) -> None:
    with pytest.raises(FieldError) as caught:
        check_timezone(raw)
    assert caught.value.field == "timezone"
    assert str(caught.value).startswith("timezone: ")
    assert problem in caught.value.problem


def test_the_field_error_names_the_field_it_is_given() -> None:
    with pytest.raises(FieldError, match=r"^default_timezone: 'Nowhere'") as caught:
        check_timezone("Nowhere", field="default_timezone")
    assert caught.value.field == "default_timezone"


def test_an_unknown_column_value_rejects_the_row_with_a_reason() -> None:
    assert column_timezone("Mars/Olympus") == (
        ROW_CODE, "timezone 'Mars/Olympus' is not an IANA time zone name (e.g. America/New_York, Europe/Berlin, UTC)"
    )
    assert ROW_CODE == "unknown_timezone"
    assert column_timezone("Berlin") == (ROW_CODE, "timezone 'Berlin' is not an IANA time zone name; did you mean "
                                                   "Europe/Berlin?")


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        (SF, ("America/Los_Angeles",)),
        ("+12125550100", ("America/New_York",)),
        (IDAHO, ("America/Boise", "America/Los_Angeles")),
        ("+441234567890", ("Europe/London",)),
        ("+493012345678", ("Europe/Berlin",)),
        (NON_GEOGRAPHIC, ()),  # Etc/Unknown is dropped
        ("not a number", ()),
    ],
)
def test_number_zones(number: str, zones: tuple[str, ...]) -> None:
    assert number_zones(number) == zones


def test_a_toll_free_number_has_every_zone_of_its_plan() -> None:
    zones = number_zones(TOLL_FREE)
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu", "America/St_Johns"} <= set(zones)
    assert len(zones) == len(set(zones)) > 10
    assert "Etc/Unknown" not in zones


# (column, number, campaign, default) -> (zones, source)
RESOLVE = [
    ("Europe/Berlin", SF, "America/Chicago", "UTC", (("Europe/Berlin",), TimezoneSource.COLUMN)),
    (None, SF, "America/Chicago", "UTC", (("America/Los_Angeles",), TimezoneSource.NUMBER)),
    ("", IDAHO, None, None, (("America/Boise", "America/Los_Angeles"), TimezoneSource.NUMBER)),
    (None, NON_GEOGRAPHIC, "America/Chicago", "UTC", (("America/Chicago",), TimezoneSource.CAMPAIGN)),
    (None, NON_GEOGRAPHIC, None, "UTC", (("UTC",), TimezoneSource.DEFAULT)),
    (None, NON_GEOGRAPHIC, "", "UTC", (("UTC",), TimezoneSource.DEFAULT)),
    (None, NON_GEOGRAPHIC, None, None, ((), None)),
]


@pytest.mark.parametrize(("column", "number", "campaign", "default", "expected"), RESOLVE)
def test_resolve_zones_takes_the_first_source_that_places_the_contact(
    column: str | None, number: str, campaign: str | None, default: str | None,
    expected: tuple[tuple[str, ...], TimezoneSource | None],
) -> None:
    resolved = resolve_zones(number, column=column, campaign=campaign, default=default)
    assert (resolved.zones, resolved.source) == expected
    assert resolved.placed is bool(expected[0])


def test_zones_as_text_and_back() -> None:
    resolved = resolve_zones(IDAHO)
    assert resolved.text == "America/Boise,America/Los_Angeles" == zones_text(resolved.zones)
    assert parse_zones_text(resolved.text) == resolved.zones
    assert parse_zones_text("") == () == parse_zones_text(None)
    assert ContactZones().text == ""
    assert TimezoneSource("column") is TimezoneSource.COLUMN
    assert [s.value for s in TimezoneSource] == ["column", "number", "campaign", "default"]
