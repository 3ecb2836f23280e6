"""pyproject.toml and the two README commands' set-up: SPDX license metadata, make demo's minimal part."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_an_spdx_string_with_its_file() -> None:
    project = PYPROJECT["project"]
    # The table form ({ text = ... }) is deprecated: setuptools warns on every build and refuses it after
    # 2027-02-18. An SPDX expression (PEP 639) and the license file replace it.
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert not any(c.startswith("License ::") for c in project.get("classifiers", [])), "PEP 639 forbids both"


def test_the_build_backend_is_new_enough_for_pep_639() -> None:
    (requirement,) = (Requirement(r) for r in PYPROJECT["build-system"]["requires"])
    assert requirement.name == "setuptools"
    lowest = min(Version(spec.version) for spec in requirement.specifier if spec.operator == ">=")
    assert lowest >= Version("77"), "setuptools 77 brought SPDX license strings and license-files"


def _recipe(target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile target."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.MULTILINE)
    assert match, f"no target {target} in the Makefile"
    return match[1].split(), [line.strip() for line in match[2].splitlines()]


def test_make_demo_sets_up_only_the_demo_part_and_make_test_everything() -> None:
    assert _recipe("demo")[0] == ["setup-demo"]
    assert _recipe("setup-demo")[1] == ["bash .ci/setup demo"]
    assert _recipe("test")[0] == ["setup"]
    assert _recipe("setup")[1] == ["bash .ci/setup"]
    assert "exec make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_the_demo_part_installs_no_test_only_tool() -> None:
    """Everything the tests alone need (dev extras, PostgreSQL, systemd, Chromium) is under the `all` part."""
    script = (REPO / ".ci" / "setup").read_text(encoding="utf-8")
    shared, _, _ = script.partition('if [ "$part" = all ]; then\n  # ---- PostgreSQL')
    demo_install = re.findall(r"pip install [^\n]*", shared)
    assert any(line.endswith("-e . >&2") for line in demo_install), demo_install
    for word in ("postgresql", "chromium", "apt_install systemd"):
        assert word not in shared.split("# ---- the local Asterisk")[0], f"{word} outside the `all` part"
    assert "'.[dev]'" not in shared.split("elif")[-1]


def test_setup_refuses_an_unknown_part() -> None:
    done = subprocess.run(["bash", str(REPO / ".ci" / "setup"), "everything"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert "usage" in done.stderr
