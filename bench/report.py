"""Collects the figures, prints the table and renders docs/benchmarks.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    section: str
    name: str
    value: str
    goal: str = ""
    ok: bool | None = None  # None: no goal, reported for context

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("met" if self.ok else "MISSED")


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> markdown paragraphs

    def add(self, section: str, name: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        self.figures.append(Figure(section, name, value, goal, ok))

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def table(self) -> str:
        rows = [("section", "figure", "value", "goal", "verdict")]
        rows += [(f.section, f.name, f.value, f.goal, f.verdict) for f in self.figures]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown_table(self, section: str | None = None) -> str:
        head = "| section " if section is None else ""
        out = [head + "| figure | value | goal | verdict |", ("|---" if section is None else "") + "|---|---|---|---|"]
        for f in self.figures:
            if section is None or f.section == section:
                verdict = {"met": "met", "MISSED": "**missed**"}.get(f.verdict, "")
                lead = f"| {f.section} " if section is None else ""
                out.append(f"{lead}| {f.name} | {f.value} | {f.goal} | {verdict} |")
        return "\n".join(out)


def fmt(value: float, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def profile_md(profile: dict[str, Any] | None, top: int = 12, thread: str = "MainThread") -> str:
    """A sampler dump as a markdown list: where the busy samples of ``thread`` were."""
    if not profile:
        return "_(no profile)_"
    busy = profile.get("busy", {}).get(thread, 0)
    idle = profile.get("idle", {}).get(thread, 0)
    total = busy + idle
    if not total:
        return "_(no samples)_"
    lines = [f"{profile['samples']} samples over {profile['seconds']:.1f} s; {thread} busy in "
             f"{100 * busy / total:.0f} % of them. Top functions by own (self) samples, % of busy {thread} samples:",
             ""]
    prefix = f"[{thread}] "
    shown = 0
    for key, count in profile.get("self", []):
        if key.startswith(prefix) and shown < top:
            lines.append(f"- {100 * count / max(busy, 1):4.1f} % `{key[len(prefix):]}`")
            shown += 1
    lines += ["", f"Inclusive (on the stack), % of busy {thread} samples, dialerd frames only:", ""]
    shown = 0
    for key, count in profile.get("inclusive", []):
        if key.startswith(prefix) and "dialerd/" in key and shown < top:
            lines.append(f"- {100 * count / max(busy, 1):4.1f} % `{key[len(prefix):]}`")
            shown += 1
    workers = profile.get("busy", {}).get("worker threads", 0)
    if workers:
        lines += ["", "Other threads (aiosqlite's one thread per pooled connection, `to_thread` workers) are left out: "
                      "a thread blocked in SQLite and one waiting for work look the same from Python."]
    return "\n".join(lines)
