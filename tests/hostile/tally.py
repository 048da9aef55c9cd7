"""Figures the hostile-input and fuzzing tests report at the end of the run (issue: "figures to print")."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

#: hostile inputs tried, per reader
TRIED: Counter[str] = Counter()
#: of the truncated real samples, how many prefixes were themselves valid files, per reader
VALID_PREFIXES: Counter[str] = Counter()


@dataclass(frozen=True)
class FuzzRun:
    target: str
    executions: int
    seconds: float
    crashes: int


FUZZ_RUNS: list[FuzzRun] = []


def tried(reader: str, count: int = 1) -> None:
    TRIED[reader] += count


def summary_lines() -> list[str]:
    lines: list[str] = []
    if TRIED:
        lines.append("hostile inputs tried per reader (each refused in one line, or read exactly as intended):")
        for reader, count in sorted(TRIED.items()):
            valid = VALID_PREFIXES.get(reader, 0)
            extra = f"  ({valid:,} truncations were valid shorter files)" if valid else ""
            lines.append(f"  {reader:<22} {count:>9,}{extra}")
        lines.append(f"  {'total':<22} {sum(TRIED.values()):>9,}")
    if FUZZ_RUNS:
        lines.append("fuzz executions per target:")
        for run in FUZZ_RUNS:
            lines.append(f"  {run.target:<22} {run.executions:>9,} in {run.seconds:.0f} s, crashes: {run.crashes}")
        lines.append(f"  crashes: {sum(r.crashes for r in FUZZ_RUNS)}")
    return lines
