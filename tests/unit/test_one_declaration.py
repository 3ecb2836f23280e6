"""One declaration per API field: every create-form field of ``CampaignSpec`` reaches the parser, the OpenAPI
document (with its declared bounds), the campaign answer and the client, with nothing else to edit.

A field added to ``services/campaign_spec.py`` fails here until it is stored and shown (its behaviour):
everything else these tests look at follows from the declaration by itself.
"""

from __future__ import annotations

import inspect
from typing import Any, get_type_hints

import pytest

from dialerd.api import forms, schemas
from dialerd.api.openapi import build_openapi
from dialerd.client import _http, aio, models, sync
from dialerd.services.campaign_spec import ALIASES, EDITABLE, FIELDS, INT_FIELDS, JSON_REFUSED, CampaignSpec
from dialerd.settings import Settings

SETTINGS = Settings()
BOUNDS = ("type", "minimum", "maximum", "minLength", "maxLength", "pattern", "enum", "format")
# Create fields the import consumes; the campaign answer shows them inside its import report.
SHOWN_IN_THE_IMPORT_REPORT = ("phone_column", "encoding")
WRITE_ONLY = ("webhook_secret",)  # taken, stored and used; never answered
# Fields that come in pairs: the other one of the pair, as the parser needs it beside the field
PAIRED = {"webhook_url": {"webhook_secret": "s" * 32},
          "webhook_secret": {"webhook_url": "https://hooks.example.com/x"}}


def _declared(field: str) -> dict[str, Any]:
    schema: dict[str, Any] = CampaignSpec.model_json_schema()["properties"][field]
    return {k: v for k, v in schema.items() if k in BOUNDS}


def _bodies() -> dict[str, dict[str, Any]]:
    doc = build_openapi(SETTINGS)
    create = doc["paths"]["/api/v1/campaigns"]["post"]["requestBody"]["content"]
    patch = doc["paths"]["/api/v1/campaigns/{id}"]["patch"]["requestBody"]["content"]
    return {"form": create["multipart/form-data"]["schema"], "json": create["application/json"]["schema"],
            "patch": patch["application/json"]["schema"], "campaign": doc["components"]["schemas"]["Campaign"]}


@pytest.mark.parametrize("field", FIELDS)
def test_the_document_states_each_field_with_its_declared_bounds(field: str) -> None:
    bodies = _bodies()
    declared = _declared(field)
    assert declared.get("type") == "string" or set(declared) & {"minimum", "maximum"}, declared
    names = [field, *(alias for alias, f in ALIASES.items() if f == field)]
    for body in ("form", "json", "patch"):
        if (body == "json" and field in JSON_REFUSED) or (body == "patch" and field not in EDITABLE):
            assert all(name not in bodies[body]["properties"] for name in names), (body, field)
            continue
        for name in names:
            stated = bodies[body]["properties"][name]
            assert {k: v for k, v in stated.items() if k in BOUNDS} == declared, (body, name)
    if field in INT_FIELDS:
        default = CampaignSpec.read_form({"name": "x"}, SETTINGS).model_dump()[field]
        assert bodies["form"]["properties"][field]["default"] == default


@pytest.mark.parametrize("field", FIELDS)
def test_the_parser_and_the_client_take_each_field(field: str) -> None:
    assert field in forms.FIELDS
    assert field in models.CREATE_FIELDS
    assert field == "name" or field in get_type_hints(models.CreateOptions)
    # The client sends it under the name the parser reads (a value the parser accepts for every field).
    value = {"scheduled_at": "2099-01-01T00:00:00Z", "default_region": "US", "encoding": "cp1252",
             "destination": "stasis:app", "retry_rules": "busy=3@120", "calling_hours": "mon-fri 09:00-20:00",
             "timezone": "Europe/Berlin", "caller_id_strategy": "local_presence", "amd": "on",
             "on_machine": "voicemail:beep", "webhook_url": "https://hooks.example.com/x",
             "webhook_secret": "s" * 32}.get(field, "x")
    if field in INT_FIELDS:
        value = str(CampaignSpec.read_form({"name": "x"}, SETTINGS).model_dump()[field])
    sent = _http.create_fields(name="x", **{field: value}) if field != "name" else _http.create_fields(name=value)
    assert sent[field] == value
    CampaignSpec.read_form({**sent, **PAIRED.get(field, {})}, SETTINGS)


def test_the_client_takes_nothing_but_the_fields() -> None:
    assert tuple(models.CREATE_FIELDS) == FIELDS
    assert (tuple(models.INT_FIELDS), tuple(models.EDITABLE)) == (INT_FIELDS, EDITABLE)
    assert set(get_type_hints(models.CreateOptions)) == set(FIELDS) - {"name"}
    for create in (_http.create_fields, sync.Campaigns.create, aio.AsyncCampaigns.create):
        params = inspect.signature(create).parameters
        assert params["options"].kind is inspect.Parameter.VAR_KEYWORD, create.__qualname__
        assert set(params) - {"self", "contacts", "idempotency_key", "retries"} == {"name", "options"}
    with pytest.raises(TypeError, match="surprise"):
        _http.create_fields(name="x", **{"surprise": "1"})  # type: ignore[typeddict-unknown-key]


@pytest.mark.parametrize("field", [f for f in FIELDS if f not in SHOWN_IN_THE_IMPORT_REPORT])
def test_the_campaign_answer_shows_each_stored_field(field: str) -> None:
    shown = schemas.Campaign.model_json_schema(mode="serialization")["properties"]
    if field in WRITE_ONLY:
        assert field not in shown, f"{field} is write-only: the campaign answer must never carry it"
        return
    assert field in shown, f"{field} is declared but not in the campaign answer (api/schemas.py Campaign)"
    if field in INT_FIELDS:
        assert {k: v for k, v in shown[field].items() if k in BOUNDS} == _declared(field)
    for alias, target in ALIASES.items():
        assert alias in shown and target in shown
    assert set(SHOWN_IN_THE_IMPORT_REPORT) <= set(schemas.ImportSummary.model_fields)
