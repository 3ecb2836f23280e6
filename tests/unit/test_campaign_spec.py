"""The create form's declaration (services/campaign_spec.py): every field is readable, and read by its bounds."""

from __future__ import annotations

import pytest

from dialerd.errors import InvalidInput
from dialerd.services.campaign_spec import (
    ALIASES,
    EDITABLE,
    FIELDS,
    INT_FIELDS,
    JSON_REFUSED,
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
