"""parse_phone: tel: URIs, spreadsheet artefacts and the NANP area-code rule."""

from __future__ import annotations

import pytest

from dialerd.domain.phone import parse_phone


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("tel:+14155550124", None, "+14155550124"),
        ("TEL:+1-415-555-0124", None, "+14155550124"),
        ("tel:415-555-0124", "US", "+14155550124"),
        ("tel:5550124;phone-context=+1415", None, "+14155550124"),
        ("tel:+14155550124;isub=1234", None, "+14155550124"),
        ("tel:+44-20-7946-0958", "US", "+442079460958"),
    ],
)
def test_tel_uris_are_read_as_numbers(raw: str, region: str | None, e164: str) -> None:
    assert parse_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "code", "word"),
    [
        ("tel:415-555-0124;ext=1", "extension", "(1)"),  # like "x1": an extension cannot be dialled
        ("tel:1-800-FLOWERS", "not_a_number", "letters"),
        ("tel:", "not_a_number", "without a number"),
        ("tel:415-555-0124", "missing_region", "default_region"),
    ],
)
def test_tel_uris_follow_the_same_rules(raw: str, code: str, word: str) -> None:
    region = None if code == "missing_region" else "US"
    result = parse_phone(raw, region)
    assert isinstance(result, tuple) and result[0] == code and word in result[1], result


@pytest.mark.parametrize("raw", ["4155550124.0", "4155550124,00", "+14155550124.0", "415555012.0"])
def test_float_artefacts_are_refused_with_a_hint(raw: str) -> None:
    # "415555012.0" would otherwise be read as the possible number +1 415 555 0120: the wrong person.
    result = parse_phone(raw, "US")
    assert isinstance(result, tuple) and result[0] == "not_a_number"
    assert "spreadsheet number" in result[1] and "format it as text" in result[1]


@pytest.mark.parametrize("raw", ["4.15555E+09", "4,15555E+09", "4.15555e9"])
def test_scientific_notation_is_refused_with_a_hint(raw: str) -> None:
    result = parse_phone(raw, "US")
    assert isinstance(result, tuple) and result[0] == "not_a_number" and "scientific notation" in result[1]


def test_decimal_points_as_separators_still_work() -> None:
    assert parse_phone("415.555.0124", "US") == "+14155550124"
    assert parse_phone("030.1234.5670", "DE") == "+493012345670"


@pytest.mark.parametrize(
    ("raw", "area"),
    [("+1 015 555 0124", "015"), ("+1 115 555 0124", "115"), ("(015) 555-0124", "015"), ("+1-199-555-0124", "199")],
)
def test_nanp_area_codes_starting_0_or_1_are_impossible(raw: str, area: str) -> None:
    result = parse_phone(raw, "US")
    assert result == ("invalid_number", f"impossible North American area code {area} (area codes start with 2-9)")


@pytest.mark.parametrize("raw", ["+1 415 555 0100", "+1 415 555 0199", "(212) 555-0142", "+1 204 555 0101"])
def test_fictional_555_01xx_and_real_area_codes_still_work(raw: str) -> None:
    e164 = parse_phone(raw, "US")
    assert isinstance(e164, str) and e164.startswith("+1") and len(e164) == 12


def test_other_countries_are_not_held_to_the_nanp_rule() -> None:
    assert parse_phone("+44 1632 960983", None) == "+441632960983"
    assert parse_phone("+7 012 345 67 89", None) == "+70123456789"
