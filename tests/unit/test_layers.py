"""The import rules between layers, checked by parsing the source (no module is imported).

``domain/`` is pure: it imports nothing from the adapters (``pbx/``, ``store/``), the services or the API.
``services/`` depends on the ports (``dialerd/ports.py``), never on a PBX adapter. The API reaches data
only through services: no module of ``api/`` imports the store, and ``api/context.py``'s ``Services`` holds
no store.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dialerd"


def _imports(path: Path) -> set[str]:
    """Every dialerd module ``path`` imports (absolute or relative, at any depth, TYPE_CHECKING included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: -node.level]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "dialerd" or name.startswith("dialerd.")}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _modules(folder):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return bad


def test_the_parser_sees_imports() -> None:
    # Guards the checks below against passing because nothing was parsed.
    assert _modules("domain") and _modules("services")
    assert "dialerd.domain.call" in _imports(PACKAGE / "domain" / "causes.py")
    assert "dialerd.ports" in _imports(PACKAGE / "services" / "dispatcher.py")


@pytest.mark.parametrize("forbidden", ["dialerd.pbx", "dialerd.services", "dialerd.store", "dialerd.api"])
def test_domain_imports_no_outer_layer(forbidden: str) -> None:
    assert _violations("domain", (forbidden,)) == []


def test_services_import_no_pbx_adapter() -> None:
    assert _violations("services", ("dialerd.pbx",)) == []


def test_api_imports_no_store() -> None:
    # Handlers reach data through services and render the services' views and rows by attribute
    # (api/render.py through api/schemas.py), so no module of the API names a store module.
    assert _violations("api", ("dialerd.store",)) == []


def test_api_context_holds_no_store() -> None:
    assert not any(name.startswith("dialerd.store") for name in _imports(PACKAGE / "api" / "context.py"))
    tree = ast.parse((PACKAGE / "api" / "context.py").read_text(encoding="utf-8"))
    services = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Services")
    fields = {n.target.id for n in services.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert "campaigns" in fields and "store" not in fields


def test_pbx_adapters_import_no_service_store_or_api() -> None:
    assert _violations("pbx", ("dialerd.services", "dialerd.store", "dialerd.api")) == []
