"""The create form's declaration (services/campaign_spec.py): every field is readable, and read by its bounds."""

from __future__ import annotations

import re

import pytest

from dialerd.errors import InvalidInput
from dialerd.services.campaign_spec import (
    ALIASES,
    EDITABLE,
    FIELDS,
    INT_FIELDS,
    JSON_REFUSED,
    RETRY_RULES_PATTERN,
    CampaignSpec,
    default_of,
    form_of,
    int_bounds,
)
from dialerd.settings import Settings

SETTINGS = Settings(dialer_default_caller_id="+14155550199", dialer_default_region="US", dialer_ring_timeout=45)


def test_every_field_is_declared_for_the_form() -> None:
    assert set(FIELDS) == set(CampaignSpec.model_fields)
    assert all(form_of(f).read for f in FIELDS)
    assert set(EDITABLE) <= set(FIELDS) and len(set(EDITABLE)) == len(EDITABLE)
    assert set(ALIASES.values()) <= set(FIELDS) and not set(ALIASES) & set(FIELDS)
    assert set(JSON_REFUSED) <= set(FIELDS)
    assert {"max_concurrent_calls", "retries_per_contact", "retry_delay_seconds", "ring_timeout_seconds"} <= set(
        INT_FIELDS)
    assert all(int_bounds(CampaignSpec.model_fields[f])[1] is not None for f in INT_FIELDS)


def test_absent_fields_take_their_declared_or_configured_default() -> None:
    spec = CampaignSpec.read_form({"name": " spring "}, SETTINGS)
    assert spec.name == "spring"
    assert spec.caller_id == "+14155550199" and spec.default_region == "US" and spec.ring_timeout_seconds == 45
    assert str(spec.destination) == default_of("destination", SETTINGS) == "dialerd-demo,s,1"
    assert (spec.max_concurrent_calls, spec.retries_per_contact, spec.retry_delay_seconds) == (5, 0, 300)
    assert (spec.scheduled_at, spec.phone_column, spec.encoding) == (None, None, None)
    # An empty value is the same as an absent one.
    assert CampaignSpec.read_form(dict.fromkeys(FIELDS, "") | {"name": "x"}, SETTINGS) == spec.model_copy(
        update={"name": "x"})


@pytest.mark.parametrize("field", INT_FIELDS)
def test_integer_fields_are_read_by_their_declared_bounds(field: str) -> None:
    lo, hi = int_bounds(CampaignSpec.model_fields[field])
    assert hi is not None
    for ok in (lo, hi):
        assert getattr(CampaignSpec.read_form({"name": "x", field: f" {ok} "}, SETTINGS), field) == ok
    for value in (lo - 1, hi + 1):
        with pytest.raises(InvalidInput) as refused:
            CampaignSpec.read_form({"name": "x", field: str(value)}, SETTINGS)
        assert refused.value.message == f"{field}: must be between {lo} and {hi}, got {value}"
        assert refused.value.details == {"field": field}


def test_the_first_bad_field_in_check_order_is_reported() -> None:
    with pytest.raises(InvalidInput) as refused:
        CampaignSpec.read_form({"name": "x", "max_concurrent_calls": "0", "default_region": "XX"}, SETTINGS)
    assert refused.value.details == {"field": "default_region"}
    with pytest.raises(InvalidInput) as refused:
        CampaignSpec.read_form({"max_concurrent_calls": "0"}, SETTINGS)
    assert refused.value.message == "name: is required"


def test_retry_rules_are_read_into_their_canonical_form() -> None:
    spec = CampaignSpec.read_form({"name": "x", "retry_rules": " BUSY=3@120 ;no_answer = 0@3600"}, SETTINGS)
    assert str(spec.retry_rules) == "busy=3@120; no_answer=0@3600"
    assert spec.model_dump(mode="json")["retry_rules"] == "busy=3@120; no_answer=0@3600"
    assert str(CampaignSpec.read_form({"name": "x"}, SETTINGS).retry_rules) == ""
    assert "retry_rules" in EDITABLE


@pytest.mark.parametrize(("raw", "problem"), [
    ("invalid_number=1@60", "invalid_number is never retried"),
    ("rejected=1@60", "rejected is never retried"),
    ("voicemail=1@60", "unknown reason 'voicemail'"),
    ("busy=1@60; busy=2@60", "busy has a rule already"),
    ("busy=1", "must be REASON=RETRIES@DELAY"),
    ("busy=1@59", "DELAY must be from 60 to 604800 seconds"),
    ("busy=" + "1" * 500, "must be at most 400 characters"),
])
def test_bad_retry_rules_are_a_400_naming_the_field(raw: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CampaignSpec.read_form({"name": "x", "retry_rules": raw}, SETTINGS)
    assert refused.value.status == 400 and refused.value.details == {"field": "retry_rules"}
    assert refused.value.message.startswith("retry_rules: ") and problem in refused.value.message


@pytest.mark.parametrize(("raw", "documented"), [
    ("", True), ("busy=3@120", True), ("busy=0@60; no_answer=10@604800; congestion=5@600000; unreachable=1@99999",
                                         True),
    (" busy = 3 @ 120 ", True), ("busy=11@60", False), ("busy=1@59", False), ("busy=1@604801", False),
    ("rejected=1@60", False), ("busy=1@60;", False),
])
def test_the_documented_pattern_agrees_with_the_parser(raw: str, documented: bool) -> None:
    """The OpenAPI pattern (what schema-driven clients generate from) accepts what the parser accepts
    (bar a reason given twice, which a pattern cannot say)."""
    assert bool(re.fullmatch(RETRY_RULES_PATTERN, raw)) is documented
    try:
        CampaignSpec.read_form({"name": "x", "retry_rules": raw}, SETTINGS)
        parsed = True
    except InvalidInput:
        parsed = False
    assert parsed is documented
