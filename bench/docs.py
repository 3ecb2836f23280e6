"""stub"""
from typing import Any


def render(report: Any, profiles: Any, machine: Any, timings: Any) -> str:
    return ""
