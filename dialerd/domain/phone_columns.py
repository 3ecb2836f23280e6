"""Which header of a contacts file holds phone numbers, and in what order to try them. Pure.

Headers are compared normalised: case-folded, accents dropped, every run of other characters made one
``_`` (``Téléphone`` -> ``telephone``, ``Phone 1 - Value`` -> ``phone_1_value``, ``E.164`` -> ``e_164``).
A file may have several phone columns (Outlook writes a dozen); each row's number is taken from the
first of them, in this priority, whose cell holds a dialable number:

1. a generic phone column: ``phone_number``, ``phone``, ``telephone``, ``tel``, ``msisdn``, ``e164``
   (HubSpot's ``Phone Number``, Salesforce's ``Phone``) and the same in other languages (``Telefon``,
   ``Téléphone``, ``Teléfono``, ``Telefono``, ``Telefone``, ``Telefoonnummer``, ``Τηλέφωνο``, ``Телефон``,
   ``電話``, ...);
2. numbered ones, by number: Google Contacts' ``Phone 1 - Value``, ``Phone 2 - Value``, ... and
   ``Phone 1``, ``Phone 2``, ...;
3. mobile: ``mobile``, ``Mobile Phone`` (Outlook), ``Mobile Phone Number`` (HubSpot), ``MobilePhone``
   (Salesforce), ``cell``, ``Handy``, ``Mobil``, ``Mobiltelefon``, ``Cellulare``, ``Celular``, ``Móvil``,
   ``Portable``, ``Mobiel``, ``GSM``, ...;
4. typed landlines, in Outlook's sense of importance: ``Primary Phone``, ``Company Main Phone``,
   ``Business Phone``, ``Business Phone 2``, ``Home Phone``, ``Home Phone 2``, ``Other Phone``,
   ``Car Phone``, ``Assistant's Phone``, ``Callback``, ``Radio Phone`` (and Salesforce's ``HomePhone``,
   ``OtherPhone``, ``AssistantPhone``; German and French Outlook's names);
5. the vaguest names: ``number``, ``contact_number``, ``Nummer``, ``Numéro``.

Fax, pager, telex, ISDN and TTY columns are never phone columns.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

GENERIC: Final = (
    "phone_number", "phonenumber", "phone", "phone_no", "phone_num", "telephone_number", "telephone", "tel",
    "msisdn", "e164", "e_164",
    "telefon", "telefonnummer", "rufnummer", "telefono", "numero_de_telefono", "numero_di_telefono",
    "numero_telefono", "telefone", "numero_de_telefone", "numero_de_telephone", "telefoon", "telefoonnummer",
    "puhelin", "puhelinnumero", "numer_telefonu", "nr_telefonu", "tlf",
    "τηλεφωνο", "телефон", "номер_телефона", "טלפון", "هاتف", "電話", "電話番号", "电话", "电话号码", "전화",
    "전화번호",
)  # fmt: skip
MOBILE: Final = (
    "mobile_number", "mobile", "mobile_phone", "mobile_phone_number", "mobilephone", "mobile_no", "cell",
    "cell_phone", "cellphone", "cell_number", "cellular", "handy", "handynummer", "mobil", "mobiltelefon",
    "mobilnummer", "mobile_telephone", "cellulare", "numero_di_cellulare", "celular", "movil",
    "telefono_movil", "telefono_celular", "portable", "telephone_portable", "tel_portable",
    "telephone_mobile", "tel_mobile", "mobiel", "mobiel_nummer", "mobiele_nummer", "telemovel", "gsm",
    "matkapuhelin", "komorka", "telefon_komorkowy", "cep_telefonu", "κινητο", "мобильный",
    "мобильный_телефон", "携帯電話", "手机", "휴대폰",
)  # fmt: skip
TYPED: Final = (
    "primary_phone", "company_main_phone", "business_phone", "business_phone_2", "work_phone", "office_phone",
    "home_phone", "home_phone_2", "homephone", "other_phone", "otherphone", "car_phone", "assistant_s_phone",
    "assistant_phone", "assistantphone", "asst_phone", "callback", "radio_phone",
    "haupttelefon", "telefon_geschaftlich", "telefon_geschaftlich_2", "telefon_firma", "telefon_privat",
    "telefon_privat_2", "weiteres_telefon", "autotelefon", "telefon_assistent",
    "telephone_principal", "telephone_bureau", "telephone_2_bureau", "telephone_domicile",
    "telephone_2_domicile", "autre_telephone", "telephone_voiture",
)  # fmt: skip
VAGUE: Final = ("number", "contact_number", "nummer", "numero")

# Every exact spelling, in priority order (the numbered patterns rank between GENERIC and MOBILE).
PHONE_COLUMN_NAMES: Final[tuple[str, ...]] = GENERIC + MOBILE + TYPED + VAGUE

_RANKS: Final = {name: rank for rank, name in enumerate(PHONE_COLUMN_NAMES)}
_NUMBERED_BASE: Final = len(GENERIC)  # numbered columns sit between GENERIC and MOBILE...
_NUMBERED_SPAN: Final = 1000  # ...and are ordered by their number, up to this many
_NUMBERED = re.compile(r"phone_?(\d{1,3})(?:_value)?")
_JUNK = re.compile(r"[\W_]+")


def normalize(name: str) -> str:
    """``Téléphone mobile`` -> ``telephone_mobile``: the form headers are compared in."""
    folded = unicodedata.normalize("NFKD", name.casefold())
    plain = "".join(char for char in folded if not unicodedata.combining(char))
    return _JUNK.sub("_", plain).strip("_")


def rank(name: str) -> int | None:
    """Where a header stands in the phone column priority (lower first), or None if it is not one."""
    key = normalize(name)
    exact = _RANKS.get(key)
    if exact is not None:
        return exact if exact < _NUMBERED_BASE else exact + _NUMBERED_SPAN
    numbered = _NUMBERED.fullmatch(key)
    if numbered is not None:
        return _NUMBERED_BASE + int(numbered.group(1))
    return None


def phone_columns(header: list[str]) -> list[int]:
    """Indices of the phone columns of ``header``, in priority order (equal ranks by position)."""
    ranked = [(r, index) for index, name in enumerate(header) if (r := rank(name)) is not None]
    return [index for _r, index in sorted(ranked)]


def find_column(header: list[str], wanted: str) -> int | None:
    """The column a user named: exactly, else the one header that normalises the same way."""
    target = wanted.strip()
    if target in header:
        return header.index(target)
    key = normalize(target)
    matches = [index for index, name in enumerate(header) if normalize(name) == key]
    return matches[0] if len(matches) == 1 else None
