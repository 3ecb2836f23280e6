"""dialerd/client/models.py is generated from the declarations, and the checked-in file is up to date."""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import NotRequired, get_origin, get_type_hints

from dialerd.api import client_models
from dialerd.client import models


def test_the_checked_in_client_models_are_generated_and_current() -> None:
    expected = client_models.render()
    assert client_models.TARGET.read_text(encoding="utf-8") == expected, (
        "dialerd/client/models.py is stale: run `python -m dialerd.api.client_models`"
    )
    ast.parse(expected)  # and it is Python


def test_the_client_models_import_nothing_of_the_server() -> None:
    tree = ast.parse(client_models.TARGET.read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "datetime", "typing"}


def test_the_client_keeps_its_public_names() -> None:
    for name in ("Campaign", "CampaignPage", "Contact", "ContactCounts", "ContactPage", "ImportPage",
                 "ImportProblem", "ImportReport", "StartDeferred", "JsonObject"):
        assert hasattr(models, name), name
    # Only the create answer has the rejected rows: NotRequired in the one client type for both answers.
    hints = get_type_hints(models.ImportReport, include_extras=True)
    assert get_origin(hints["problems"]) is NotRequired
    assert get_type_hints(models.Campaign)["import"] is models.ImportReport


def test_importing_the_client_and_dialerctl_loads_no_pydantic_and_no_server_module() -> None:
    code = ("import sys, dialerd.client, dialerd.ctl; "
            "print(sorted(m for m in sys.modules if m == 'pydantic' or m.startswith(('dialerd.api', "
            "'dialerd.services', 'dialerd.store'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]", done.stdout
