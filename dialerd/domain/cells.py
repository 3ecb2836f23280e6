"""Spreadsheet-safe CSV cells: one rule for every CSV dialerd writes (the API's results export and
``dialerctl contacts --csv``).

A cell starting with ``= + - @``, a tab or a carriage return (or their full-width forms) gets a leading
``'`` so a spreadsheet never evaluates it as a formula (OWASP's advice against CSV injection). A plain
E.164 number (``+14155550100``: ``+`` and digits only) is left as it is: it cannot hold a formula, and the
export stays machine-readable (no ``'`` to strip before re-importing it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# "+" then at most 15 ASCII digits: a spreadsheet reads it as a number at worst, never as a formula.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def safe_cell(value: object) -> str:
    """One CSV cell that a spreadsheet will show as text, never run as a formula (None is empty)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_START) and _E164.fullmatch(text) is None:
        return "'" + text
    return text


_FIRST = frozenset(FORMULA_START)


def safe_cells(values: Iterable[str]) -> list[str]:
    """``safe_cell`` of each of a line's text cells, in one call (perf: the export's million-line loop)."""
    return [v if not v or v[0] not in _FIRST else safe_cell(v) for v in values]
