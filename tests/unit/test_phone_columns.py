"""The phone column names and their priority (dialerd.domain.phone_columns)."""

from __future__ import annotations

import pytest

from dialerd.domain.phone_columns import find_column, normalize, phone_columns, rank


@pytest.mark.parametrize(
    ("header", "key"),
    [("Téléphone", "telephone"), ("Phone 1 - Value", "phone_1_value"), ("E.164", "e_164"),
     ("Assistant's Phone", "assistant_s_phone"), ("Telefon geschäftlich", "telefon_geschaftlich"),
     ("  MOBILE-Phone  ", "mobile_phone")],
)  # fmt: skip
def test_headers_are_compared_without_case_accents_or_punctuation(header: str, key: str) -> None:
    assert normalize(header) == key


@pytest.mark.parametrize(
    "header",
    ["Phone 1 - Value", "Phone 12 - Value", "Business Phone", "Business Phone 2", "Home Phone", "Mobile Phone",
     "Car Phone", "Other Phone", "Primary Phone", "Company Main Phone", "Phone Number", "Mobile Phone Number",
     "Phone", "Mobile", "MobilePhone", "HomePhone", "OtherPhone", "Téléphone", "Teléfono", "Telefon", "Handy",
     "Cellulare", "Telefono", "Telefoonnummer", "Mobil", "Celular", "Portable", "Móvil", "Mobiltelefon",
     "Telefon privat", "Τηλέφωνο", "Телефон", "tel", "msisdn"],
)  # fmt: skip
def test_real_tools_phone_headers_are_recognised(header: str) -> None:
    assert rank(header) is not None


@pytest.mark.parametrize(
    "header",
    ["Phone 1 - Label", "Phone 1 - Type", "Business Fax", "Home Fax", "Pager", "Telex", "ISDN", "TTY/TDD Phone",
     "E-mail 1 - Value", "First Name", "Given Name", "phone_type"],
)  # fmt: skip
def test_labels_faxes_pagers_and_other_columns_are_not_phone_columns(header: str) -> None:
    assert rank(header) is None


def test_priority_generic_then_numbered_then_mobile_then_typed_then_vague() -> None:
    header = ["Number", "Home Phone", "Mobile Phone", "Phone 2 - Value", "Phone 1 - Value", "Phone Number", "Notes"]
    assert [header[i] for i in phone_columns(header)] == [
        "Phone Number", "Phone 1 - Value", "Phone 2 - Value", "Mobile Phone", "Home Phone", "Number",
    ]


def test_outlook_order_is_mobile_primary_business_home_other() -> None:
    header = ["Other Phone", "Home Phone 2", "Home Phone", "Business Phone 2", "Business Phone", "Mobile Phone",
              "Primary Phone", "Business Fax"]
    assert [header[i] for i in phone_columns(header)] == [
        "Mobile Phone", "Primary Phone", "Business Phone", "Business Phone 2", "Home Phone", "Home Phone 2",
        "Other Phone",
    ]


def test_find_column_exact_then_normalised_and_unique() -> None:
    header = ["Name", "Mobile Phone", "mobile phone", "Telefon"]
    assert find_column(header, "mobile phone") == 2  # exact wins
    assert find_column(header, "MOBILE-PHONE") is None  # two headers normalise alike: ambiguous
    assert find_column(header, " telefon ") == 3
    assert find_column(header, "Fax") is None
