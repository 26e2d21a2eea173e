"""The fault matrix's figures (tests/RELIABILITY.md): for each row of a run, how many runs, how many
awaits did not end within their stated bound (hung), how many child processes died unasked
(crashes), how many acknowledged writes were not found afterwards (lost), and whether the same client
went on working (recovered). Each row asserts the good values; with ``ASYNCMONGO_RELIABILITY_REPORT``
set to a path, it also appends its figures to that JSON file (``{"rows": [...]}``).

``python -m tests.reliability REPORT.json`` prints a report's rows as the table RELIABILITY.md shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Awaitable

REPORT_ENV = "ASYNCMONGO_RELIABILITY_REPORT"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Hung(Exception):
    """An await that did not end within its bound (the operation was cancelled by the bound)."""


@dataclasses.dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def hung(self) -> bool:
        return isinstance(self.error, Hung)


@dataclasses.dataclass
class Figures:
    row: str
    case: str
    seed: int | None = None
    runs: int = 0
    operations: int = 0
    hung: int = 0
    crashes: int = 0
    writes_acked: int = 0
    writes_lost: int = 0
    recovered: bool | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    _start: float = dataclasses.field(default_factory=time.monotonic, repr=False)

    async def bounded(self, aw: Awaitable[Any], bound: float) -> Outcome:
        """Await ``aw`` for at most ``bound`` seconds; an exception is returned, not raised (but
        a cancellation of the caller still propagates); not ending in time counts as hung."""
        self.operations += 1
        start = time.monotonic()
        try:
            value = await asyncio.wait_for(aw, bound)
        except asyncio.TimeoutError:
            self.hung += 1
            return Outcome(error=Hung(f"not ended within {bound} s"), elapsed=time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - the caller classifies it
            return Outcome(error=exc, elapsed=time.monotonic() - start)
        return Outcome(value=value, elapsed=time.monotonic() - start)

    def count(self, key: str, n: int = 1) -> None:
        """A tally in ``notes`` (errors by type, operations by kind...)."""
        self.notes[key] = self.notes.get(key, 0) + n

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        d["seconds"] = round(time.monotonic() - self._start, 2)
        return d

    def finish(self, problems: list[str] = ()) -> None:
        """Append the figures to the report (if one is asked for), then assert the good values
        and that the row found no other ``problems``."""
        if problems:
            self.notes["problems"] = list(problems)
        record(self)
        good = {"hung": 0, "crashes": 0, "writes_lost": 0, "recovered": True}
        bad = {k: getattr(self, k) for k, v in good.items() if getattr(self, k) != v}
        assert not bad and not problems, (
            f"{self.row}/{self.case} (seed {self.seed}): {bad}; problems:\n" + "\n".join(problems)
            + f"\nfigures {self.as_dict()}")


def _loop_kind() -> str:
    try:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]
    except RuntimeError:
        return ""


def _context() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
                   f"Python {platform.python_version()}",
        "loop": _loop_kind(),
        "wakeup": os.environ.get("ASYNCMONGO_WAKEUP", "eventfd"),
        "asyncio_debug": bool(os.environ.get("PYTHONASYNCIODEBUG")),
        "sanitizer": "libasan" in os.environ.get("LD_PRELOAD", ""),
    }


def record(fig: Figures) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    entry = {**_context(), **fig.as_dict()}
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        report = json.loads(text) if text.strip() else {"rows": []}
        report["rows"].append(entry)
        f.seek(0)
        f.truncate()
        json.dump(report, f, indent=1, default=str)


def table(report: dict[str, Any]) -> str:
    """Markdown table of a report: one line per row (its cases summed)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in report["rows"]:
        t = rows.setdefault(r["row"], {"runs": 0, "operations": 0, "hung": 0, "crashes": 0,
                                       "writes_acked": 0, "writes_lost": 0, "recovered": True,
                                       "seconds": 0.0, "cases": 0})
        for k in ("runs", "operations", "hung", "crashes", "writes_acked", "writes_lost", "seconds"):
            t[k] += r[k]
        t["cases"] += 1
        t["recovered"] = t["recovered"] and r["recovered"] is True
    lines = ["| row | cases | runs | operations | hung | crashes | acked writes | lost | recovered | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, t in rows.items():
        lines.append(f"| {name} | {t['cases']} | {t['runs']} | {t['operations']} | {t['hung']} | "
                     f"{t['crashes']} | {t['writes_acked']} | {t['writes_lost']} | "
                     f"{'yes' if t['recovered'] else 'NO'} | {t['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
