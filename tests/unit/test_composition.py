"""How the services are put together, checked by parsing the source (nothing is imported).

The dispatcher owns its call follower (no inheritance, no private names shared); no service hides an
import cycle under TYPE_CHECKING; the composition root builds every part and then patches none.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dialerd"


def _tree(relative: str) -> ast.Module:
    return ast.parse((PACKAGE / relative).read_text(encoding="utf-8"), filename=relative)


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def test_the_dispatcher_owns_a_follower_and_inherits_from_nothing() -> None:
    dispatcher = _class(_tree("services/dispatcher.py"), "Dispatcher")
    follower = _class(_tree("services/following.py"), "CallFollower")
    assert dispatcher.bases == [] and follower.bases == []
    built = {n.func.id for n in ast.walk(dispatcher) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "CallFollower" in built


def test_no_service_imports_another_modules_private_names() -> None:
    bad = []
    for path in sorted((PACKAGE / "services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dialerd"):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert bad == []


def test_no_service_imports_under_type_checking() -> None:
    # An import only for type checking between services is a cycle kept out of sight.
    bad = []
    for path in sorted((PACKAGE / "services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                bad.append(path.name)
    assert bad == []


def test_the_composition_root_assigns_no_attribute_of_what_it_built() -> None:
    build = next(n for n in ast.walk(_class(_tree("daemon.py"), "Daemon"))
                 if isinstance(n, ast.AsyncFunctionDef) and n.name == "build")
    patched = [ast.unparse(t) for n in ast.walk(build) if isinstance(n, ast.Assign)
               for t in n.targets if isinstance(t, ast.Attribute)]
    assert patched == []  # e.g. store.publish = ..., dispatcher.campaigns = ...


def test_no_object_reads_another_objects_private_attributes_on_the_call_path() -> None:
    # self._x and cls._x are an object's own; anything else reaching for ``._x`` reads someone's internals.
    bad = []
    for relative in ("daemon.py", "services/dispatcher.py", "services/following.py", "services/slots.py",
                     "services/lifecycle.py", "services/scheduler.py", "services/campaigns.py",
                     "api/prometheus.py"):
        for node in ast.walk(_tree(relative)):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{relative}:{node.lineno} {ast.unparse(node)}")
    assert bad == []
