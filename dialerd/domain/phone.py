"""Phone-number rules: what dialerd accepts as a dialable number, and why it refuses the rest. Pure.

Numbers are accepted when ``phonenumbers`` calls them *possible* (right length for the country), not only
when they are *valid* (assigned ranges): dialerd's test PBX dials the fictional +1 415 555 01XX range,
which is possible but not valid. On top of the length, North American (+1) numbers must follow the
NANP's NXX area codes: an area code starting with 0 or 1 cannot exist and is refused.
Local-only numbers (no area code), letters (vanity numbers) and extensions are refused. A ``00`` prefix
is read as ``+`` when the number is not possible otherwise. RFC 3966 ``tel:`` URIs are read as numbers
(``tel:+14155550124``; ``;phone-context=`` completes a local one; ``;ext=`` is an extension, refused like
``x123``). Spreadsheet artefacts are refused with a hint: a ``.0`` float suffix (``4155550124.0``, which
could otherwise parse as a different, possible number) and scientific notation (``4.15555E+09``).
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, ValidationResult

_LETTER = re.compile(r"[^\W\d_]")
_SCIENTIFIC = re.compile(r"\d+(?:[.,]\d+)?[eE]\+?\d+")
# A number a spreadsheet stored as a float and wrote back with its decimals: "4155550124.0", "4155550124,00".
_FLOAT = re.compile(r"\+?\d{5,}[.,]0+")
_E164 = PhoneNumberFormat.E164
_POSSIBLE = ValidationResult.IS_POSSIBLE
_phonenumbers_parse = phonenumbers.parse
_format = phonenumbers.format_number


def parse_phone(raw: str, region: str | None) -> str | tuple[str, str]:
    """E.164 for a dialable ``raw`` number, else ``(code, reason)``."""
    # Cheap first-character tests keep both checks off the common row's path (this runs per row).
    if raw[:1] in ("t", "T") and raw[:4].lower() == "tel:":
        return _parse_tel_uri(raw, region)
    if raw[-1:] == "0" and _FLOAT.fullmatch(raw):
        return "not_a_number", _FLOAT_REASON
    return _parse(raw, region, letters=_LETTER.search(raw) is not None)


_FLOAT_REASON = (
    "a spreadsheet number with decimals ('.0'): the column was stored as numbers, which can also drop "
    "leading zeros; format it as text and export again, or remove the '.0'"
)


def _parse_tel_uri(raw: str, region: str | None) -> str | tuple[str, str]:
    """An RFC 3966 URI: phonenumbers reads it (``phone-context``, ``ext``); letters only count before ';'."""
    number = raw[4:].split(";", 1)[0]
    if not number.strip():
        return "not_a_number", "tel: URI without a number"
    return _parse(raw, region, letters=_LETTER.search(number) is not None)


def _parse(raw: str, region: str | None, *, letters: bool) -> str | tuple[str, str]:
    number: PhoneNumber | None = None
    failure: NumberParseException | None = None
    e164, verdict = "", -1
    try:
        number = _phonenumbers_parse(raw, region)
        e164 = _format(number, _E164)
        verdict = _length_verdict(number.country_code or 0, len(e164))
    except NumberParseException as exc:
        failure = exc
    if verdict != _POSSIBLE and raw.startswith("00"):
        # "00" is the international prefix in most of the world but not in the default region (or there
        # is none): read it as "+" when that gives a possible number.
        try:
            alternative = _phonenumbers_parse("+" + raw[2:], None)
        except NumberParseException:
            pass
        else:
            alternative_e164 = _format(alternative, _E164)
            if _length_verdict(alternative.country_code or 0, len(alternative_e164)) == _POSSIBLE:
                number, e164, verdict = alternative, alternative_e164, _POSSIBLE
    if number is None:
        assert failure is not None
        return _parse_failure(raw, region, failure, letters)
    if number.extension:
        return "extension", f"has an extension ({number.extension}); extensions cannot be dialled"
    if letters:
        return "not_a_number", _letters_reason(raw)
    if verdict == _POSSIBLE:
        # "+1" then ten digits NXX NXX XXXX: an area code starts with 2-9. (The fictional 555-01XX range
        # is an exchange and line number under a real area code, so it stays accepted.)
        if e164[1] == "1" and len(e164) == 12 and e164[2] in "01":
            return "invalid_number", f"impossible North American area code {e164[2:5]} (area codes start with 2-9)"
        return e164
    return "invalid_number", _impossible_reason(verdict, number.country_code or 0)


@lru_cache(maxsize=4096)
def _length_verdict(country_code: int, e164_length: int) -> int:
    """``is_possible_number_with_reason`` for every number with this country code and E.164 length.

    libphonenumber's answer depends only on the country code and the count of national digits, so one
    probe per pair stands for all numbers; this saves its per-row region and metadata lookups.
    """
    digits = max(e164_length - 1 - len(str(country_code)), 1)
    probe = PhoneNumber(country_code=country_code, national_number=int("1" * digits))
    return phonenumbers.is_possible_number_with_reason(probe)


def _parse_failure(raw: str, region: str | None, exc: NumberParseException, letters: bool) -> tuple[str, str]:
    kind = exc.error_type
    if letters:
        return "not_a_number", _letters_reason(raw)
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        if region is None and not raw.lstrip().startswith(("+", "\uff0b", "00")):
            return "missing_region", "national number needs default_region"
        return "invalid_number", "unknown country calling code"
    if kind == NumberParseException.NOT_A_NUMBER:
        return "not_a_number", "not a phone number"
    if kind == NumberParseException.TOO_LONG:
        return "invalid_number", "number too long"
    return "invalid_number", "number too short"


def _letters_reason(raw: str) -> str:
    if _SCIENTIFIC.fullmatch(raw):
        return "in scientific notation (a spreadsheet rewrote it); format the column as text, export again"
    return "contains letters; dialerd dials digits only"


def _impossible_reason(verdict: int, country_code: int) -> str:
    if verdict == ValidationResult.TOO_SHORT:
        return "number too short"
    if verdict == ValidationResult.TOO_LONG:
        return "number too long"
    if verdict == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return "local number without its area code"
    if verdict == ValidationResult.INVALID_COUNTRY_CODE:
        return f"unknown country calling code +{country_code}"
    return f"wrong number of digits for {_region_name(country_code)}"


@lru_cache(maxsize=256)
def _region_name(country_code: int) -> str:
    region = phonenumbers.region_code_for_country_code(country_code)
    return f"+{country_code} ({region})" if region != phonenumbers.UNKNOWN_REGION else f"+{country_code}"
