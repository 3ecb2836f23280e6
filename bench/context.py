"""What every section gets: the PBX settings, a scratch directory, the report and the time budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Report


@dataclass
class Ctx:
    pbx: dict[str, str]  # local_pbx_env()
    workdir: Path
    report: Report
    deadline: float  # time.monotonic() by which the whole run should be over
    quick: bool = False  # smaller sizes (development runs)
    profiles: dict[str, Any] = field(default_factory=dict)  # label -> sampler dump

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def ari_env(self, app: str, db: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in self.pbx.items() if k.startswith(("DIALERD_ARI_", "DIALERD_PBX_ENDPOINT"))}
        env.update({"DIALERD_ARI_APP": app, "DIALERD_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
                    "DIALERD_PBX_DRIVER": "ari", "DIALERD_SHUTDOWN_GRACE_PERIOD": "15"})
        env.update(extra)
        return env

    def fake_env(self, db: Path, **extra: str) -> dict[str, str]:
        env = {"DIALERD_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "DIALERD_PBX_DRIVER": "fake",
               "DIALERD_SHUTDOWN_GRACE_PERIOD": "5"}
        env.update(extra)
        return env
