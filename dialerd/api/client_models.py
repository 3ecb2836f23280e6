"""Generates ``dialerd/client/models.py`` from the declarations: ``python -m dialerd.api.client_models``.

The client is a standalone SDK (blocking, no pydantic, nothing of the server imported), so it cannot
import ``api/schemas.py``; its ``TypedDict``s and the create form's field names are written out from the
models' JSON Schema instead, and ``tests/unit/test_client_models.py`` fails while the checked-in file
differs from what this prints.

The client keeps its own names (``ImportProblem``, ``CampaignPage``, ``ContactPage``) and one type where
the server has two: ``Campaign`` is also the create answer, whose ``import`` report is ``ImportReport``
with the rejected rows (``problems``, only there: NotRequired).
"""

from __future__ import annotations

import keyword
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from dialerd.api import schemas
from dialerd.services.campaign_spec import EDITABLE, FIELDS, INT_FIELDS, CampaignSpec

TARGET = Path(__file__).resolve().parents[1] / "client" / "models.py"
REF = "#/components/schemas/{model}"
# What the client exposes, and under which names.
ROOTS = ("Campaign", "CampaignList", "Contact", "ContactList", "Explanation", "ImportPage", "SuppressionList",
         "SuppressionsAdded", "CallLimits", "ContactsAppended",
         "WebhookState")
RENAMED = {"RowProblem": "ImportProblem", "CampaignList": "CampaignPage", "ContactList": "ContactPage",
           "SuppressionList": "SuppressionPage",
           "ImportSummary": "ImportReport", "CreatedCampaign": "Campaign"}
# Client types that are the union of two server objects: keys of only one of them are NotRequired.
# The first of each pair has every key (and gives the order); the second gives the docstring.
MERGED = {"Campaign": ("CreatedCampaign", "Campaign"), "ImportReport": ("ImportReport", "ImportSummary")}

HEADER = '''"""Static types of the JSON the daemon returns, and the create form's field names.

GENERATED from dialerd/api/schemas.py and dialerd/services/campaign_spec.py by
``python -m dialerd.api.client_models``; do not edit (tests/unit/test_client_models.py checks it).

Responses are plain ``dict``s decoded from JSON; these ``TypedDict``s only tell the type checker what
keys to expect. A newer daemon may add keys; they are simply there at run time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict
'''


def _name(ref: str) -> str:
    model = ref.rsplit("/", 1)[1]
    return RENAMED.get(model, model)


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _name(schema["$ref"])
    if "anyOf" in schema:
        return " | ".join(dict.fromkeys(_type(s) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_type(schema['items'])}]"
    if kind == "object":
        extra = schema.get("additionalProperties", True)
        return f"dict[str, {_type(extra) if isinstance(extra, dict) else 'Any'}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}.get(
        str(kind), "Any")


def _fields(defs: dict[str, Any], models: tuple[str, ...]) -> dict[str, str]:
    """Each key's annotation; a key not required in every one of ``models`` is NotRequired."""
    out: dict[str, str] = {}
    for model in models:
        for key, prop in defs[model]["properties"].items():
            out.setdefault(key, _type(prop))
    for key in out:
        if not all(key in defs[m].get("required", ()) for m in models):
            out[key] = f"NotRequired[{out[key]}]"
    return out


def _typeddict(name: str, doc: str | None, fields: dict[str, str]) -> str:
    if any(keyword.iskeyword(k) for k in fields):  # "import": only the functional syntax can say it
        body = "".join(f'        "{k}": {t},\n' for k, t in fields.items())
        lead = f"# {doc}\n" if doc else ""
        return f'{lead}{name} = TypedDict(\n    "{name}",\n    {{\n{body}    }},\n)\n'
    lines = [f"class {name}(TypedDict):\n"]
    if doc:
        lines.append(f'    """{doc}"""\n\n')
    lines += [f"    {k}: {t}\n" for k, t in fields.items()]
    return "".join(lines)


def _order(defs: dict[str, Any]) -> list[str]:
    """The client's types, each after the ones it uses."""
    done: list[str] = []

    def visit(model: str) -> None:
        name = RENAMED.get(model, model)
        if name in done:
            return
        for part in MERGED.get(name, (model,)):
            for ref in _refs(defs[part]):
                visit(ref)
        done.append(name)

    for root in ROOTS:
        visit(root)
    return done


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else []
        return own + [r for v in schema.values() for r in _refs(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in _refs(v)]
    return []


def render() -> str:
    """The text of dialerd/client/models.py."""
    _, top = models_json_schema([(m, "serialization") for m in schemas.MODELS], ref_template=REF, by_alias=True)
    defs: dict[str, Any] = top["$defs"]
    originals = {RENAMED.get(m, m): m for m in defs if RENAMED.get(m, m) == m or m not in MERGED}
    blocks = []
    for name in _order(defs):
        models = MERGED.get(name, (originals.get(name, name),))
        doc = defs[models[-1]].get("description")
        only = [k for k in defs[models[0]]["properties"] if len(models) > 1 and k not in defs[models[1]]["properties"]]
        if only:
            doc = f"{doc} ``{'``, ``'.join(only)}``: only in the answer to create."
        blocks.append(_typeddict(name, doc, _fields(defs, models)))
    blocks.append(_create_options())
    constants = (
        "# The create form's fields (an absent one takes the daemon's default), the integer ones (sent as JSON\n"
        "# numbers in a JSON create), and what PATCH may change.\n"
        + _tuple("CREATE_FIELDS", FIELDS) + _tuple("INT_FIELDS", INT_FIELDS) + _tuple("EDITABLE", EDITABLE)
    )
    return HEADER + "\n\n" + "\n\n".join(blocks) + "\n\n" + constants + "\nJsonObject = dict[str, Any]\n"


def _create_options() -> str:
    """The keyword arguments of the client's create(), beside name: every other form field, None allowed."""
    kinds = {int: "int | None", datetime: "datetime | str | None"}
    fields = {f: kinds.get(_plain(info.annotation), "str | None")
              for f, info in CampaignSpec.model_fields.items() if f != "name"}
    doc = ("The create form's fields beside ``name``, as ``create()`` takes them: None or absent leaves the "
           "daemon's default.")
    return _typeddict("CreateOptions", doc, fields).replace("(TypedDict):", "(TypedDict, total=False):", 1)


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _tuple(name: str, values: tuple[str, ...]) -> str:
    return f"{name} = (\n" + "".join(f'    "{v}",\n' for v in values) + ")\n"


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
